"""The server's status rules as pure functions: phase writes, history, heartbeat merging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from caravanserai.api.base import Condition, ConditionStatus
from caravanserai.api.node import Heartbeat, NodeInfo, NodeNetwork, NodeState, NodeStatus
from caravanserai.api.problems import Conflict
from caravanserai.api.project import ProjectPhase as P
from caravanserai.api.project import ProjectStatus
from caravanserai.registry import lifecycle

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def phase_condition(status: ProjectStatus) -> Condition:
    return next(c for c in status.conditions if c.type == "Phase")


def test_initial_project_status() -> None:
    status = lifecycle.initial_project_status(T0)
    assert status.phase is P.PENDING
    assert phase_condition(status).reason == "Created"
    assert [h.phase for h in status.history] == [P.PENDING]


def test_set_phase_records_history_and_condition() -> None:
    status = lifecycle.initial_project_status(T0)
    assert lifecycle.set_phase(status, "p", P.SCHEDULED, reason="Scheduled", message=None,
                               now=at(1), node_ref="n1")
    assert status.node_ref == "n1"
    assert lifecycle.set_phase(status, "p", P.RUNNING, reason="ContainersRunning",
                               message="All containers running", now=at(2))
    cond = phase_condition(status)
    assert (cond.reason, cond.message, cond.last_transition_time) == (
        "ContainersRunning", "All containers running", at(2),
    )
    assert [h.phase for h in status.history] == [P.PENDING, P.SCHEDULED, P.RUNNING]
    # Same phase, new message: condition changes, transition time and history stay.
    assert lifecycle.set_phase(status, "p", P.RUNNING, reason=None, message="still fine",
                               now=at(3))
    cond = phase_condition(status)
    assert (cond.reason, cond.message, cond.last_transition_time) == (
        "ContainersRunning", "still fine", at(2),
    )
    assert len(status.history) == 3
    # Nothing new: no change.
    assert not lifecycle.set_phase(status, "p", P.RUNNING, reason=None, message=None, now=at(4))


@pytest.mark.parametrize(
    ("old", "new"),
    [(P.TERMINATING, P.RUNNING), (P.TERMINATING, P.FAILED), (P.TERMINATED, P.RUNNING),
     (P.PENDING, P.RUNNING), (P.TERMINATED, P.TERMINATING)],
)
def test_forbidden_transitions_conflict(old: P, new: P) -> None:
    status = ProjectStatus(phase=old, node_ref="n1")
    with pytest.raises(Conflict):
        lifecycle.set_phase(status, "p", new, reason=None, message=None, now=T0)
    assert status.phase is old


def test_scheduled_and_running_need_a_node() -> None:
    status = lifecycle.initial_project_status(T0)
    # 409: whether nodeRef must be sent depends on the stored status, not on the request.
    with pytest.raises(Conflict) as err:
        lifecycle.set_phase(status, "p", P.SCHEDULED, reason=None, message=None, now=T0)
    assert "nodeRef is required" in err.value.detail


def test_pending_clears_node_and_stale_rescheduler_clocks() -> None:
    status = ProjectStatus(
        phase=P.RUNNING, node_ref="n1",
        conditions=[Condition(type="NotReadyAt", status=ConditionStatus.TRUE,
                              reason="NodeNotReady", last_transition_time=T0),
                    Condition(type="Phase", status=ConditionStatus.TRUE, last_transition_time=T0)],
    )
    lifecycle.set_phase(status, "p", P.PENDING, reason="NodeNotReady", message=None, now=at(9))
    assert status.node_ref is None
    assert [c.type for c in status.conditions] == ["Phase"]


def test_history_is_capped() -> None:
    status = lifecycle.initial_project_status(T0)
    for i in range(20):
        lifecycle.set_phase(status, "p", P.SCHEDULED, reason=None, message=None, now=at(2 * i),
                            node_ref="n")
        lifecycle.set_phase(status, "p", P.PENDING, reason=None, message=None, now=at(2 * i + 1))
    assert len(status.history) == lifecycle.HISTORY_LIMIT
    assert status.history[-1].time == at(39)


def test_replace_status_keeps_server_history_and_enforces_the_machine() -> None:
    old = lifecycle.initial_project_status(T0)
    sent = ProjectStatus(phase=P.SCHEDULED, node_ref="n1", history=[],
                         conditions=[Condition(type="Phase", status=ConditionStatus.TRUE,
                                               reason="Scheduled", message="on n1")])
    new = lifecycle.replace_status(old, sent, "p", at(5))
    assert [h.phase for h in new.history] == [P.PENDING, P.SCHEDULED]
    assert new.history[-1].reason == "Scheduled"
    assert phase_condition(new).last_transition_time == at(5)
    with pytest.raises(Conflict):
        lifecycle.replace_status(new, ProjectStatus(phase=P.TERMINATED), "p", at(6))
    # A status without a phase keeps the current phase.
    same = lifecycle.replace_status(new, ProjectStatus(node_ref="n1"), "p", at(7))
    assert same.phase is P.SCHEDULED


def test_redeploy_after_spec_change() -> None:
    failed_on_node = ProjectStatus(phase=P.FAILED, node_ref="n1")
    assert lifecycle.redeploy_after_spec_change(failed_on_node, "p", T0)
    assert failed_on_node.phase is P.SCHEDULED and failed_on_node.node_ref == "n1"
    failed_nowhere = ProjectStatus(phase=P.FAILED)
    assert lifecycle.redeploy_after_spec_change(failed_nowhere, "p", T0)
    assert failed_nowhere.phase is P.PENDING
    running = ProjectStatus(phase=P.RUNNING, node_ref="n1")
    assert not lifecycle.redeploy_after_spec_change(running, "p", T0)


def test_heartbeat_merges_and_respects_draining() -> None:
    status = lifecycle.initial_node_status(T0)
    hb = Heartbeat(state=NodeState.READY, network=NodeNetwork(ip="10.0.0.1", agent_port=9090),
                   capacity={"cpu": "2"}, info=NodeInfo(agent_version="1"))
    lifecycle.apply_heartbeat(status, hb, at(1))
    assert status.state is NodeState.READY and status.last_heartbeat == at(1)
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == (ConditionStatus.TRUE, "AgentReady")

    lifecycle.apply_heartbeat(status, Heartbeat(network=NodeNetwork(dns_name="n.ts")), at(2))
    assert status.network.ip == "10.0.0.1" and status.network.dns_name == "n.ts"
    assert status.capacity == {"cpu": "2"} and status.info.agent_version == "1"

    status.state = NodeState.DRAINING
    lifecycle.apply_heartbeat(status, Heartbeat(state=NodeState.NOT_READY), at(3))
    assert status.state is NodeState.DRAINING  # the admin's drain holds
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.status is ConditionStatus.FALSE  # but the health is reported


def test_sync_ready_condition_fixes_contradictions_only() -> None:
    status = NodeStatus(state=NodeState.READY, conditions=[
        Condition(type="Ready", status=ConditionStatus.FALSE, reason="HeartbeatTimeout")])
    lifecycle.sync_ready_condition(status, T0)
    assert status.conditions[0].status is ConditionStatus.TRUE
    consistent = NodeStatus(state=NodeState.NOT_READY, conditions=[
        Condition(type="Ready", status=ConditionStatus.FALSE, reason="HeartbeatTimeout")])
    lifecycle.sync_ready_condition(consistent, T0)
    assert consistent.conditions[0].reason == "HeartbeatTimeout"


def test_only_a_heartbeat_of_news_rewrites_a_ready_node() -> None:
    """A Ready node's heartbeat that changes nothing renews its lease only; any change, a
    node that is not Ready, or a lastHeartbeat past the refresh period rewrites the Node."""
    status = lifecycle.initial_node_status(T0)
    full = Heartbeat(state=NodeState.READY, network=NodeNetwork(ip="10.0.0.1", agent_port=9090),
                     capacity={"cpu": "2"}, info=NodeInfo(agent_version="1"))
    assert not lifecycle.heartbeat_is_routine(status, full, at(1))  # NotReady → Ready
    lifecycle.apply_heartbeat(status, full, at(1))
    beat = Heartbeat(state=NodeState.READY, network=NodeNetwork(ip="10.0.0.1", agent_port=9090))
    assert lifecycle.heartbeat_is_routine(status, beat, at(11))
    assert lifecycle.heartbeat_is_routine(status, full, at(11))  # the same report again
    assert lifecycle.heartbeat_is_routine(status, Heartbeat(), at(11))  # timestamp only
    moved = Heartbeat(state=NodeState.READY, network=NodeNetwork(ip="10.0.0.2"))
    assert not lifecycle.heartbeat_is_routine(status, moved, at(11))
    sick = Heartbeat(state=NodeState.NOT_READY)
    assert not lifecycle.heartbeat_is_routine(status, sick, at(11))
    assert not lifecycle.heartbeat_is_routine(status, Heartbeat(capacity={"cpu": "4"}), at(11))
    refresh = lifecycle.NODE_STATUS_REFRESH
    assert not lifecycle.heartbeat_is_routine(status, beat, at(1) + refresh)
    assert not lifecycle.heartbeat_is_routine(status, beat, at(12), timedelta(seconds=10))

    silent = status.model_copy(deep=True)
    silent.state = NodeState.NOT_READY  # node-health's doing: the next beat must be seen
    assert not lifecycle.heartbeat_is_routine(silent, beat, at(11))
    drained = status.model_copy(deep=True)
    drained.state = NodeState.DRAINING
    assert not lifecycle.heartbeat_is_routine(drained, beat, at(11))
