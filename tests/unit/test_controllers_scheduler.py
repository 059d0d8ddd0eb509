"""The scheduler's decisions: load accounting with assumptions, spread, tie-break, 409s."""

from __future__ import annotations

import asyncio
from collections import Counter

from test_controllers_support import (  # type: ignore[import-not-found]
    FakeClient,
    NullLog,
    StaticLW,
    informer_of,
    node,
    project,
)

from caravanserai.api.node import Node, NodeState
from caravanserai.api.problems import Conflict, NotFound
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.informer import (
    Controller,
    ControllerContext,
    Delta,
    DeltaType,
    FakeClock,
    InformerFactory,
    Result,
)
from controllers.scheduler import (
    LoadTracker,
    Scheduler,
    controller,
    occupied_node,
    schedulable,
)

# -- LoadTracker ---------------------------------------------------------------------------


def test_pick_least_loaded_then_smallest_name() -> None:
    t = LoadTracker()
    for n in ("c", "a", "b"):
        t.set_node(n, True)
    assert t.pick() == "a"
    t.observe("p1", "a", 5)
    assert t.pick() == "b"
    t.observe("p2", "b", 6)
    t.observe("p3", "c", 7)
    assert t.pick() == "a"
    assert t.loads() == {"a": 1, "b": 1, "c": 1}


def test_ineligible_nodes_are_never_picked() -> None:
    t = LoadTracker()
    t.set_node("a", True)
    t.set_node("b", True)
    t.set_node("a", False)
    assert t.pick() == "b"
    t.remove_node("b")
    assert t.pick() is None
    t.set_node("a", True)
    assert t.pick() == "a"


def test_burst_of_assumptions_spreads_evenly_before_any_event() -> None:
    t = LoadTracker()
    nodes = [f"n{i:03d}" for i in range(100)]
    for n in nodes:
        t.set_node(n, True)
    placed: Counter[str] = Counter()
    for i in range(1000):
        chosen = t.pick()
        assert chosen is not None
        t.assume(f"p{i}", chosen, 1)
        placed[chosen] += 1
    assert set(placed.values()) == {10}


def test_stale_event_keeps_the_assumption_newer_event_confirms_it() -> None:
    t = LoadTracker()
    t.set_node("a", True)
    t.set_node("b", True)
    t.observe("p", None, 10)  # Pending at rv 10
    t.assume("p", "a", 10)
    assert t.load("a") == 1
    t.observe("p", None, 10)  # a late copy of the Pending state: still assumed
    assert t.load("a") == 1 and t.assumed("p") == ("a", 10)
    t.observe("p", "a", 11)  # our write, seen by the informer
    assert t.load("a") == 1 and t.assumed("p") is None
    assert t.loads() == {"a": 1, "b": 0}


def test_unassume_reverts_to_the_observed_node() -> None:
    t = LoadTracker()
    t.set_node("a", True)
    t.observe("p", None, 3)
    t.assume("p", "a", 3)
    t.unassume("p")
    assert t.load("a") == 0 and t.assumed("p") is None
    assert t.pick() == "a"


def test_event_newer_than_the_write_wins_over_the_assumption() -> None:
    t = LoadTracker()
    t.set_node("a", True)
    t.set_node("b", True)
    t.assume("p", "a", 3)
    t.observe("p", "b", 9)  # someone else placed it (our write must have failed)
    assert t.loads() == {"a": 0, "b": 1}


def test_forget_removes_the_project_everywhere() -> None:
    t = LoadTracker()
    t.set_node("a", True)
    t.observe("p", "a", 1)
    t.assume("q", "a", 1)
    t.forget("p")
    t.forget("q")
    assert t.load("a") == 0


def test_heap_stays_bounded_under_churn() -> None:
    t = LoadTracker()
    for i in range(10):
        t.set_node(f"n{i}", True)
    for i in range(20_000):
        t.observe(f"p{i % 50}", f"n{i % 10}", i)
    assert len(t._heap) <= 4 * 10 + 1024 + 1
    assert sum(t.loads().values()) == 50


def test_what_counts() -> None:
    assert schedulable(node("a"))
    assert not schedulable(node("a", NodeState.NOT_READY))
    assert not schedulable(node("a", NodeState.DRAINING))
    assert not schedulable(node("a", unschedulable=True))
    assert not schedulable(None)
    for phase in (
        ProjectPhase.SCHEDULED,
        ProjectPhase.RUNNING,
        ProjectPhase.FAILED,
        ProjectPhase.TERMINATING,
    ):
        assert occupied_node(project("p", phase, "a")) == "a"
    assert occupied_node(project("p", ProjectPhase.TERMINATED, "a")) is None
    assert occupied_node(project("p")) is None


# -- the reconciler ------------------------------------------------------------------------


def _scheduler(
    projects: list[Project], nodes: list[Node]
) -> tuple[Scheduler, FakeClient, LoadTracker]:
    client = FakeClient()
    tracker = LoadTracker()
    for n in nodes:
        tracker.set_node(n.metadata.name, schedulable(n))
    for p in projects:
        tracker.observe(p.metadata.name, occupied_node(p), int(p.metadata.resource_version or 0))
    s = Scheduler(
        client,  # type: ignore[arg-type]
        informer_of(Project, *projects),
        informer_of(Node, *nodes),
        tracker,
        NullLog(),
    )
    return s, client, tracker


async def test_schedules_onto_least_loaded_with_precondition() -> None:
    s, client, tracker = _scheduler(
        [project("new", rv=7), project("old", ProjectPhase.RUNNING, "a", rv=3)],
        [node("a"), node("b"), node("c", NodeState.NOT_READY), node("d", unschedulable=True)],
    )
    assert await s.reconcile("new") is None
    [call] = client.calls
    assert call.method == "projects.bind"
    assert call.args == ("new",)
    assert call.kwargs == {"node_ref": "b", "resource_version": "7"}
    assert tracker.assumed("new") == ("b", 7)


async def test_conflict_unassumes_and_requeues() -> None:
    s, client, tracker = _scheduler([project("p", rv=4)], [node("a")])
    client.errors["projects.bind"] = Conflict("modified")
    assert await s.reconcile("p") == Result(requeue=True)
    assert tracker.assumed("p") is None and tracker.load("a") == 0


async def test_not_found_unassumes() -> None:
    s, client, tracker = _scheduler([project("p", rv=4)], [node("a")])
    client.errors["projects.bind"] = NotFound("gone")
    assert await s.reconcile("p") is None
    assert tracker.load("a") == 0


async def test_no_ready_node_waits_without_polling() -> None:
    s, client, _ = _scheduler([project("p")], [node("a", NodeState.DRAINING)])
    assert await s.reconcile("p") is None  # no requeue: a node event will wake it
    # Only the why, on the Pending project: no assignment.
    [call] = client.calls
    assert call.method == "projects.update_status"
    cond = call.args[0].status.conditions[-1]
    assert (cond.type, cond.status.value, cond.reason, cond.message) == (
        "Scheduled", "False", "Unschedulable", "0/1 nodes fit: 1 draining")
    assert "p" in s.unschedulable


async def test_only_pending_projects_are_scheduled() -> None:
    s, client, _ = _scheduler(
        [project("r", ProjectPhase.RUNNING, "a"), project("t", ProjectPhase.TERMINATING, "a")],
        [node("a")],
    )
    assert await s.reconcile("r") is None
    assert await s.reconcile("t") is None
    assert await s.reconcile("missing") is None
    assert client.calls == []


async def test_already_written_version_is_not_scheduled_twice() -> None:
    s, client, _ = _scheduler([project("p", rv=4)], [node("a"), node("b")])
    await s.reconcile("p")
    # The informer has not delivered our write yet; a node event requeues "p" meanwhile.
    await s.reconcile("p")
    assert client.methods() == ["projects.bind"]


async def test_concurrent_decisions_go_out_as_one_batch() -> None:
    names = [f"p{i}" for i in range(20)]
    s, client, tracker = _scheduler([project(n, rv=i + 1) for i, n in enumerate(names)],
                                    [node("a"), node("b")])
    results = await asyncio.gather(*(s.reconcile(n) for n in names))
    assert results == [None] * 20
    assert s.binder.batches == 1 and len(client.calls) == 20
    assert tracker.load("a") == tracker.load("b") == 10


async def test_node_tracker_lagging_the_cache_is_double_checked() -> None:
    s, client, tracker = _scheduler([project("p")], [node("a"), node("b")])
    # The cache already shows "a" NotReady; the tracker's handler has not seen it yet.
    s.nodes.cache.upsert(node("a", NodeState.NOT_READY, rv=2))
    await s.reconcile("p")
    assert client.calls[0].kwargs["node_ref"] == "b"
    assert "a" not in tracker.eligible


# -- wiring: events drive the queue --------------------------------------------------------


async def test_node_becoming_ready_requeues_pending_projects() -> None:
    """Over informers fed by hand: no Ready node → nothing; the node turns Ready → both
    waiting projects are scheduled at once (no resync, no polling)."""
    projects_lw = StaticLW(Project, [project("p1"), project("p2")])
    nodes_lw = StaticLW(Node, [node("a", NodeState.NOT_READY)])

    def make(model: type, options: object) -> object:
        return projects_lw if model is Project else nodes_lw

    informers = InformerFactory(make)  # type: ignore[arg-type]
    client = FakeClient()
    ctx = ControllerContext("scheduler", client, informers, FakeClock())  # type: ignore[arg-type]
    runnable = controller(ctx)
    assert isinstance(runnable, Controller)
    tasks = [asyncio.create_task(informers.run()), asyncio.create_task(runnable.run())]
    try:
        await informers.wait_for_sync()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(runnable.queue.wait_idle(), 5)
        # Only the why (Unschedulable on each Pending project), no assignment.
        assert {c.method for c in client.calls} == {"projects.update_status"}
        client.calls.clear()
        # What the reflector does with the node's MODIFIED event.
        nodes_informer = informers.nodes()
        ready = node("a", rv=5)
        old = nodes_informer.cache.upsert(ready)
        nodes_informer._distribute([Delta(DeltaType.UPDATED, old, ready)])
        async with asyncio.timeout(5):
            await client.wait_calls(2)
        assert sorted(c.args[0] for c in client.calls) == ["p1", "p2"]
        assert {c.kwargs["node_ref"] for c in client.calls} == {"a"}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
