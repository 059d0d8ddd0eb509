"""rescheduler: Scheduled at once, Running after the grace period, NotReadyAt written once
and cleared on recovery or when the project moves, missing nodes count as NotReady."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from test_controllers_support import (  # type: ignore[import-not-found]
    FakeClient,
    NullLog,
    clock_condition,
    informer_of,
    node,
    project,
    ready_condition,
)

from caravanserai.api.base import Condition, get_condition
from caravanserai.api.node import Node, NodeState
from caravanserai.api.problems import Conflict
from caravanserai.api.project import CONDITION_NOT_READY_AT, Project, ProjectPhase
from caravanserai.informer import Controller, FakeClock, Result
from controllers.rescheduler import MESSAGE_RESET, Action, Plan, Rescheduler, plan

GRACE = 180.0
P = ProjectPhase


def not_ready_at(when: datetime) -> Condition:
    return clock_condition(CONDITION_NOT_READY_AT, when)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_scheduled_on_not_ready_node_resets_at_once(clock: FakeClock) -> None:
    p = project("p", P.SCHEDULED, "a")
    assert plan(p, node("a", NodeState.NOT_READY), clock.now(), GRACE) == Plan(Action.RESET)


def test_missing_node_counts_as_not_ready(clock: FakeClock) -> None:
    assert plan(project("p", P.SCHEDULED, "ghost"), None, clock.now(), GRACE).action is Action.RESET
    running = plan(project("p", P.RUNNING, "ghost"), None, clock.now(), GRACE)
    assert running == Plan(Action.MARK, requeue_after=GRACE)


def test_running_gets_a_grace_period_timer(clock: FakeClock) -> None:
    down = node("a", NodeState.NOT_READY)
    assert plan(project("p", P.RUNNING, "a"), down, clock.now(), GRACE) == Plan(
        Action.MARK, requeue_after=GRACE
    )
    marked = project("p", P.RUNNING, "a", conditions=[not_ready_at(clock.now())])
    later = clock.now() + timedelta(seconds=100)
    assert plan(marked, down, later, GRACE) == Plan(Action.NOTHING, requeue_after=80.0)
    assert plan(marked, down, clock.now() + timedelta(seconds=GRACE), GRACE) == Plan(Action.RESET)


def test_recovery_clears_not_ready_at(clock: FakeClock) -> None:
    marked = project("p", P.RUNNING, "a", conditions=[not_ready_at(clock.now())])
    assert plan(marked, node("a"), clock.now(), GRACE) == Plan(Action.CLEAR)
    assert plan(project("p", P.RUNNING, "a"), node("a"), clock.now(), GRACE) == Plan(Action.NOTHING)


def test_moved_project_clears_not_ready_at(clock: FakeClock) -> None:
    for phase in (P.FAILED, P.TERMINATING, P.PENDING):
        moved = project("p", phase, "a", conditions=[not_ready_at(clock.now())])
        assert plan(moved, node("a", NodeState.NOT_READY), clock.now(), GRACE).action is (
            Action.CLEAR
        )


def test_draining_is_respected_unless_its_agent_is_gone(clock: FakeClock) -> None:
    p = project("p", P.RUNNING, "a")
    assert plan(p, node("a", NodeState.DRAINING), clock.now(), GRACE).action is Action.NOTHING
    dead = node("a", NodeState.DRAINING, conditions=[ready_condition(False, "HeartbeatTimeout")])
    assert plan(p, dead, clock.now(), GRACE).action is Action.MARK


def test_other_phases_are_not_touched(clock: FakeClock) -> None:
    down = node("a", NodeState.NOT_READY)
    for phase in (P.PENDING, P.FAILED, P.TERMINATING, P.TERMINATED):
        assert plan(project("p", phase, "a"), down, clock.now(), GRACE).action is Action.NOTHING


# -- the reconciler ------------------------------------------------------------------------


def _reschedulers(
    clock: FakeClock, projects: list[Project], nodes: list[Node]
) -> tuple[Rescheduler, FakeClient]:
    client = FakeClient()
    r = Rescheduler(
        client,  # type: ignore[arg-type]
        informer_of(Project, *projects),
        informer_of(Node, *nodes),
        clock,
        GRACE,
        NullLog(),
    )
    return r, client


async def test_reset_is_a_phase_patch_with_precondition(clock: FakeClock) -> None:
    r, client = _reschedulers(
        clock, [project("p", P.SCHEDULED, "a", rv=9)], [node("a", NodeState.NOT_READY)]
    )
    assert await r.reconcile("p") is None
    [call] = client.calls
    assert call.method == "projects.patch_status"
    assert call.args == ("p", P.PENDING, "NodeNotReady", MESSAGE_RESET)
    assert call.kwargs == {"resource_version": "9"}


async def test_mark_writes_not_ready_at_once_with_the_clock(clock: FakeClock) -> None:
    r, client = _reschedulers(
        clock, [project("p", P.RUNNING, "a", rv=4)], [node("a", NodeState.NOT_READY)]
    )
    assert await r.reconcile("p") == Result(requeue_after=GRACE)
    written: Project = client.calls[0].args[0]
    assert written.metadata.resource_version == "4"
    mark = get_condition(written.status.conditions, CONDITION_NOT_READY_AT)
    assert mark is not None and mark.last_transition_time == clock.now()
    assert mark.reason == "NodeNotReady" and "3m" in (mark.message or "")


async def test_clear_removes_only_not_ready_at(clock: FakeClock) -> None:
    marked = project(
        "p", P.RUNNING, "a", conditions=[not_ready_at(clock.now()), ready_condition(True, "X")]
    )
    r, client = _reschedulers(clock, [marked], [node("a")])
    await r.reconcile("p")
    written: Project = client.calls[0].args[0]
    assert [c.type for c in written.status.conditions] == ["Ready"]


async def test_conflict_means_look_again(clock: FakeClock) -> None:
    r, client = _reschedulers(
        clock, [project("p", P.SCHEDULED, "a")], [node("a", NodeState.NOT_READY)]
    )
    client.errors["projects.patch_status"] = Conflict("Running meanwhile")
    assert await r.reconcile("p") == Result(requeue=True)


async def test_grace_timer_resets_exactly_at_the_deadline(clock: FakeClock) -> None:
    """With the Controller and a FakeClock: NotReadyAt at t0, reset at t0 + grace, not before."""
    marked = project("p", P.RUNNING, "a", conditions=[not_ready_at(clock.now())])
    r, client = _reschedulers(clock, [marked], [node("a", NodeState.NOT_READY)])
    ctrl: Controller[str] = Controller("rescheduler", r, clock=clock)
    ctrl.enqueue("p")
    task = asyncio.create_task(ctrl.run())
    try:
        await clock.advance(GRACE - 0.5)
        assert client.calls == []
        await clock.advance(0.5)
        async with asyncio.timeout(5):
            await client.wait_calls(1)
        assert [c.args[1] for c in client.calls] == [P.PENDING]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
