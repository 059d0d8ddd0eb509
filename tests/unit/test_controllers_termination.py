"""termination: Terminated records are removed; Terminating on a dead node is forced after
the timeout (TerminatingAt written once, cleared on recovery)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from test_controllers_support import (  # type: ignore[import-not-found]
    FakeClient,
    NullLog,
    clock_condition,
    informer_of,
    node,
    project,
)

from caravanserai.api.base import Condition, get_condition
from caravanserai.api.node import Node, NodeState
from caravanserai.api.problems import NotFound
from caravanserai.api.project import CONDITION_TERMINATING_AT, Project, ProjectPhase
from caravanserai.informer import FakeClock, Result
from controllers.termination import (
    MESSAGE_TERMINATION_TIMEOUT,
    Action,
    Plan,
    Termination,
    plan,
)

TIMEOUT = 600.0
P = ProjectPhase


def terminating_at(when: datetime) -> Condition:
    return clock_condition(CONDITION_TERMINATING_AT, when)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_plan(clock: FakeClock) -> None:
    now = clock.now()
    down = node("a", NodeState.NOT_READY)
    assert plan(project("p", P.TERMINATED, "a"), node("a"), now, TIMEOUT) == Plan(Action.REMOVE)
    assert plan(project("p", P.TERMINATING, "a"), node("a"), now, TIMEOUT) == Plan(Action.NOTHING)
    assert plan(project("p", P.TERMINATING, "a"), down, now, TIMEOUT) == Plan(
        Action.MARK, requeue_after=TIMEOUT
    )
    assert plan(project("p", P.TERMINATING, "ghost"), None, now, TIMEOUT).action is Action.MARK
    marked = project("p", P.TERMINATING, "a", conditions=[terminating_at(now)])
    assert plan(marked, down, now + timedelta(seconds=599), TIMEOUT) == Plan(
        Action.NOTHING, requeue_after=1.0
    )
    assert plan(marked, down, now + timedelta(seconds=600), TIMEOUT) == Plan(Action.FORCE)
    assert plan(marked, node("a"), now, TIMEOUT) == Plan(Action.CLEAR)
    for phase in (P.PENDING, P.SCHEDULED, P.RUNNING, P.FAILED):
        assert plan(project("p", phase, "a"), down, now, TIMEOUT).action is Action.NOTHING


def _termination(
    clock: FakeClock, projects: list[Project], nodes: list[Node]
) -> tuple[Termination, FakeClient]:
    client = FakeClient()
    t = Termination(
        client,  # type: ignore[arg-type]
        informer_of(Project, *projects),
        informer_of(Node, *nodes),
        clock,
        TIMEOUT,
        NullLog(),
    )
    return t, client


async def test_terminated_is_deleted_like_caractrl_delete(clock: FakeClock) -> None:
    t, client = _termination(clock, [project("p", P.TERMINATED, "a")], [node("a")])
    assert await t.reconcile("p") is None
    [call] = client.calls
    assert call.method == "projects.delete" and call.args == ("p",)
    assert call.kwargs == {"force": False}
    client.errors["projects.delete"] = NotFound("already gone")
    assert await t.reconcile("p") is None


async def test_force_is_terminated_with_the_original_message(clock: FakeClock) -> None:
    marked = project(
        "p", P.TERMINATING, "a", rv=5, conditions=[terminating_at(clock.now() - timedelta(hours=1))]
    )
    t, client = _termination(clock, [marked], [node("a", NodeState.NOT_READY)])
    assert await t.reconcile("p") is None
    [call] = client.calls
    assert call.args == ("p", P.TERMINATED, "TerminationTimeout", MESSAGE_TERMINATION_TIMEOUT)
    assert call.kwargs == {"resource_version": "5"}
    assert MESSAGE_TERMINATION_TIMEOUT == (
        "Node was NotReady for too long; project force-terminated. Docker resources on the "
        "node may need manual cleanup."
    )


async def test_mark_then_timer(clock: FakeClock) -> None:
    t, client = _termination(
        clock, [project("p", P.TERMINATING, "a")], [node("a", NodeState.NOT_READY)]
    )
    assert await t.reconcile("p") == Result(requeue_after=TIMEOUT)
    written: Project = client.calls[0].args[0]
    mark = get_condition(written.status.conditions, CONDITION_TERMINATING_AT)
    assert mark is not None and mark.last_transition_time == clock.now()
    assert "10m" in (mark.message or "")
