"""node-health: the timer comes from the heartbeat, the Ready condition agrees with the
state, Draining is kept, recovery."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from test_controllers_support import (  # type: ignore[import-not-found]
    FakeClient,
    NullLog,
    informer_of,
    node,
    ready_condition,
)

from caravanserai.api.base import ConditionStatus, get_condition
from caravanserai.api.node import CONDITION_READY, Node, NodeState
from caravanserai.api.problems import Conflict
from caravanserai.informer import Controller, FakeClock, Result
from controllers.node_health import NodeHealth, evaluate, node_available

TIMEOUT = 90.0


def ready(n: Node) -> tuple[ConditionStatus, str | None]:
    c = get_condition(n.status.conditions, CONDITION_READY)
    assert c is not None
    return c.status, c.reason


def test_fresh_ready_node_only_rearms_its_timer() -> None:
    clock = FakeClock()
    n = node("a", heartbeat=clock.now() - timedelta(seconds=30))
    decision = evaluate(n.status, clock.now(), TIMEOUT)
    assert decision.status is None
    assert decision.requeue_after == pytest.approx(60.0)  # heartbeat + 90 s - now


def test_stale_ready_node_goes_not_ready_with_heartbeat_timeout() -> None:
    clock = FakeClock()
    n = node("a", heartbeat=clock.now() - timedelta(seconds=90))
    decision = evaluate(n.status, clock.now(), TIMEOUT)
    assert decision.status is not None
    assert decision.status.state is NodeState.NOT_READY
    new = n.model_copy(update={"status": decision.status})
    assert ready(new) == (ConditionStatus.FALSE, "HeartbeatTimeout")
    assert decision.requeue_after is None  # the next heartbeat wakes it, not a poll


def test_already_not_ready_is_idempotent() -> None:
    clock = FakeClock()
    n = node("a", NodeState.NOT_READY, heartbeat=clock.now() - timedelta(seconds=200))
    assert evaluate(n.status, clock.now(), TIMEOUT).status is None


def test_timestamp_only_heartbeat_recovers_a_timed_out_node() -> None:
    clock = FakeClock()
    n = node("a", NodeState.NOT_READY, heartbeat=clock.now() - timedelta(seconds=1))
    decision = evaluate(n.status, clock.now(), TIMEOUT)
    assert decision.status is not None and decision.status.state is NodeState.READY
    new = n.model_copy(update={"status": decision.status})
    assert ready(new) == (ConditionStatus.TRUE, "AgentReady")
    assert decision.requeue_after == pytest.approx(89.0)


def test_agent_reported_not_ready_is_left_alone_while_it_heartbeats() -> None:
    clock = FakeClock()
    n = node(
        "a",
        NodeState.NOT_READY,
        heartbeat=clock.now(),
        conditions=[ready_condition(False, "AgentNotReady")],
    )
    decision = evaluate(n.status, clock.now(), TIMEOUT)
    assert decision.status is None and decision.requeue_after == pytest.approx(90.0)


def test_never_heartbeated_node_keeps_its_registered_reason() -> None:
    clock = FakeClock()
    n = node("a", NodeState.NOT_READY, conditions=[ready_condition(False, "NodeRegistered")])
    assert evaluate(n.status, clock.now(), TIMEOUT) == evaluate(n.status, clock.now(), TIMEOUT)
    assert evaluate(n.status, clock.now(), TIMEOUT).status is None


def test_draining_is_never_changed_but_its_condition_tracks_health() -> None:
    clock = FakeClock()
    n = node("a", NodeState.DRAINING, heartbeat=clock.now() - timedelta(seconds=120))
    decision = evaluate(n.status, clock.now(), TIMEOUT)
    assert decision.status is not None and decision.status.state is NodeState.DRAINING
    silent = n.model_copy(update={"status": decision.status})
    assert ready(silent) == (ConditionStatus.FALSE, "HeartbeatTimeout")
    assert not node_available(silent)  # drained and dead: its projects must move
    # Heartbeats resume: still Draining, condition healthy again.
    back = silent.model_copy(deep=True)
    back.status.last_heartbeat = clock.now()
    decision = evaluate(back.status, clock.now(), TIMEOUT)
    assert decision.status is not None and decision.status.state is NodeState.DRAINING
    healthy = back.model_copy(update={"status": decision.status})
    assert ready(healthy) == (ConditionStatus.TRUE, "AgentReady")
    assert node_available(healthy)


def test_ready_node_with_a_contradicting_condition_is_fixed() -> None:
    clock = FakeClock()
    n = node("a", heartbeat=clock.now(), conditions=[ready_condition(False, "HeartbeatTimeout")])
    decision = evaluate(n.status, clock.now(), TIMEOUT)
    assert decision.status is not None
    assert ready(n.model_copy(update={"status": decision.status}))[0] is ConditionStatus.TRUE


def test_transition_time_moves_only_when_the_status_flips() -> None:
    clock = FakeClock()
    start = clock.now()
    n = node("a", heartbeat=start - timedelta(seconds=100))
    down = evaluate(n.status, start, TIMEOUT).status
    assert down is not None
    c = get_condition(down.conditions, CONDITION_READY)
    assert c is not None and c.last_transition_time == start


def test_node_available() -> None:
    assert node_available(node("a"))
    assert node_available(node("a", NodeState.DRAINING))
    assert not node_available(node("a", NodeState.NOT_READY))
    assert not node_available(None)


# -- the reconciler and its timer ----------------------------------------------------------


async def test_reconcile_writes_with_precondition_and_conflict_requeues() -> None:
    clock = FakeClock()
    stale = node("a", rv=12, heartbeat=clock.now() - timedelta(seconds=95))
    client = FakeClient()
    reconciler = NodeHealth(client, informer_of(Node, stale), clock, TIMEOUT, NullLog())  # type: ignore[arg-type]
    assert await reconciler.reconcile("a") is None
    [call] = client.calls
    written: Node = call.args[0]
    assert written.metadata.resource_version == "12"  # the precondition travels in the body
    assert written.status.state is NodeState.NOT_READY
    client.errors["nodes.update_status"] = Conflict("a heartbeat landed")
    assert await reconciler.reconcile("a") == Result(requeue=True)
    assert await reconciler.reconcile("gone") is None


async def test_the_timer_fires_exactly_at_heartbeat_plus_timeout() -> None:
    """A Controller with a FakeClock: nothing happens until lastHeartbeat + 90 s."""
    clock = FakeClock()
    client = FakeClient()
    nodes = informer_of(Node, node("a", heartbeat=clock.now() - timedelta(seconds=20)))
    reconciler = NodeHealth(client, nodes, clock, TIMEOUT, NullLog())  # type: ignore[arg-type]
    ctrl: Controller[str] = Controller("node-health", reconciler, clock=clock)
    ctrl.enqueue("a")
    task = asyncio.create_task(ctrl.run())
    try:
        await clock.advance(0)
        assert client.calls == []
        await clock.advance(69.9)  # 89.9 s after the heartbeat
        assert client.calls == []
        await clock.advance(0.1)  # 90 s: the node's own timer fires
        async with asyncio.timeout(5):
            await client.wait_calls(1)
        assert client.methods() == ["nodes.update_status"]
        assert client.calls[0].args[0].status.state is NodeState.NOT_READY
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_state_change_is_reported_as_an_event() -> None:
    from caravanserai.api.event import Event
    from caravanserai.informer.recorder import EventRecorder

    class Sink:
        def __init__(self) -> None:
            self.written: list[Event] = []

        async def record(self, event: Event) -> Event:
            self.written.append(event)
            return event

    clock = FakeClock()
    client = FakeClient()
    client.events = Sink()
    recorder = EventRecorder(client, "node-health", clock=clock)  # type: ignore[arg-type]
    stale = node("a", heartbeat=clock.now() - timedelta(seconds=100))
    reconciler = NodeHealth(  # type: ignore[arg-type]
        client, informer_of(Node, stale), clock, TIMEOUT, NullLog(), recorder
    )
    await reconciler.reconcile("a")
    assert await recorder.flush(timeout=None)
    [event] = client.events.written
    assert (event.type.value, event.reason, event.involved_object.kind) == (
        "Warning", "NodeNotReady", "Node"
    )
    assert event.message == "Node a status is now: NotReady (no heartbeat for 1m30s)"


async def test_a_node_stale_by_its_status_but_not_by_its_lease_stays_ready() -> None:
    """Routine heartbeats renew the node lease, not the Node: node-health reads the lease
    before declaring a node silent, and re-arms its timer from it."""
    clock = FakeClock()
    stale = node("a", rv=12, heartbeat=clock.now() - timedelta(seconds=95))
    client = FakeClient()
    client.leases["a"] = clock.now() - timedelta(seconds=10)
    reconciler = NodeHealth(client, informer_of(Node, stale), clock, TIMEOUT, NullLog())  # type: ignore[arg-type]
    assert await reconciler.reconcile("a") == Result(requeue_after=80.0)
    assert client.calls == []

    client.leases["a"] = clock.now() - timedelta(seconds=91)  # the lease is stale too
    assert await reconciler.reconcile("a") is None
    [call] = client.calls
    assert call.args[0].status.state is NodeState.NOT_READY


def test_evaluate_takes_the_newer_of_status_and_lease() -> None:
    clock = FakeClock()
    n = node("a", heartbeat=clock.now() - timedelta(seconds=30))
    older = clock.now() - timedelta(seconds=60)
    assert evaluate(n.status, clock.now(), TIMEOUT, older).requeue_after == pytest.approx(60.0)
    newer = clock.now() - timedelta(seconds=5)
    assert evaluate(n.status, clock.now(), TIMEOUT, newer).requeue_after == pytest.approx(85.0)
