"""The controller builder: events → predicates → keys → the reconcile function, over informers
fed by hand and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from test_controllers_support import (  # type: ignore[import-not-found]
    FakeClient,
    StaticLW,
    node,
    project,
)

from caravanserai.api.node import Node, NodeState
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.informer import (
    Change,
    Controller,
    ControllerContext,
    Delta,
    DeltaType,
    FakeClock,
    InformerFactory,
    Request,
    Result,
    SharedInformer,
    annotations_changed,
    by_index,
    generation_changed,
    index_by_node_ref,
    index_by_phase,
    keys_in_index,
    labels_changed,
    phase_changed,
    phase_in,
    predicate,
)


def change(old: Any, new: Any) -> Change[Any]:
    kind = (
        DeltaType.ADDED if old is None else DeltaType.DELETED if new is None else DeltaType.UPDATED
    )
    return Change(kind, old, new)


def relabelled(p: Project, **labels: str) -> Project:
    q = p.model_copy(deep=True)
    q.metadata.labels.update(labels)
    return q


# -- predicates ------------------------------------------------------------------------------


def test_changed_predicates_let_adds_and_deletes_pass_and_filter_updates() -> None:
    a = project("a")
    for pred in (generation_changed, labels_changed, annotations_changed, phase_changed):
        assert pred(change(None, a)) and pred(change(a, None))
        assert not pred(change(a, a.model_copy(deep=True))), pred
    assert labels_changed(change(a, relabelled(a, x="1")))
    assert not annotations_changed(change(a, relabelled(a, x="1")))
    bumped = a.model_copy(deep=True)
    bumped.metadata.generation = 2
    assert generation_changed(change(a, bumped))
    assert phase_changed(change(a, project("a", ProjectPhase.SCHEDULED, "n1")))


def test_phase_in_looks_at_the_new_object_or_the_last_state_of_a_deleted_one() -> None:
    terminating = phase_in(ProjectPhase.TERMINATING)
    p = project("a", ProjectPhase.TERMINATING, "n1")
    assert terminating(change(None, p)) and terminating(change(p, None))
    assert not terminating(change(p, project("a", ProjectPhase.TERMINATED)))
    assert phase_in(NodeState.READY)(change(None, node("n1")))


def test_predicates_combine() -> None:
    is_a = predicate(lambda c: c.object.metadata.name == "a")
    a, b = project("a"), project("b")
    assert (is_a & labels_changed)(change(None, a))
    assert not (is_a & labels_changed)(change(None, b))
    assert (is_a | labels_changed)(change(b, relabelled(b, x="1")))
    assert (~is_a)(change(None, b)) and not (~is_a)(change(None, a))


def test_a_builder_without_reconciler_cannot_build() -> None:
    with pytest.raises(TypeError, match="reconciler"):
        Controller.for_(Project).build(_context(InformerFactory(lambda m, o: StaticLW(m))))  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError):
        Controller.for_(Project).workers(0)


# -- wiring ----------------------------------------------------------------------------------


def _context(informers: InformerFactory, **config: Any) -> ControllerContext:
    return ControllerContext("test", FakeClient(), informers, FakeClock(), config)  # type: ignore[arg-type]


class Seen:
    """A reconcile function that records its requests."""

    def __init__(self) -> None:
        self.requests: list[Request[Any]] = []
        self.event = asyncio.Event()

    async def __call__(self, req: Request[Any]) -> Result | None:
        self.requests.append(req)
        self.event.set()
        return None

    async def names(self, count: int) -> list[str]:
        async with asyncio.timeout(5):
            while len(self.requests) < count:
                self.event.clear()
                await self.event.wait()
        return sorted(r.name for r in self.requests)


@asynccontextmanager
async def running(
    projects: list[Project], nodes: list[Node], builder: Any, **config: Any
) -> AsyncIterator[tuple[InformerFactory, Controller[str]]]:
    lws = {Project: StaticLW(Project, projects), Node: StaticLW(Node, nodes)}
    informers = InformerFactory(lambda model, options: lws[model])  # type: ignore[arg-type,return-value]
    ctrl = builder(_context(informers, **config))
    tasks = [asyncio.create_task(informers.run()), asyncio.create_task(ctrl.run())]
    try:
        await informers.wait_for_sync()
        for informer in informers.informers:
            await informer.wait_for_handlers()
        yield informers, ctrl
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def deliver(informer: SharedInformer[Any], obj: Any, *, delete: bool = False) -> None:
    """What the reflector does with a watch event."""
    if delete:
        informer.cache.delete(obj.metadata.name)
        informer._distribute([Delta(DeltaType.DELETED, obj, obj)])
    else:
        old = informer.cache.upsert(obj)
        kind = DeltaType.ADDED if old is None else DeltaType.UPDATED
        informer._distribute([Delta(kind, old, obj)])


async def test_the_reconcile_function_gets_the_cached_object_and_the_filter_applies() -> None:
    seen = Seen()
    builder = (
        Controller.for_(Project)
        .with_filter(~predicate(lambda c: c.object.metadata.name.startswith("skip")))
        .workers(2)
        .reconcile(seen)
    )
    async with running([project("a"), project("skip-1")], [], builder) as (informers, ctrl):
        assert await seen.names(1) == ["a"]
        assert ctrl.workers == 2
        assert seen.requests[0].object == project("a")
        assert seen.requests[0].informer is informers.projects()
        # A delete is reconciled too, with no object.
        deliver(informers.projects(), project("a"), delete=True)
        await seen.names(2)
        assert seen.requests[1].object is None
        # Handlers see events in order: once "b" is reconciled, "skip-2" was filtered.
        deliver(informers.projects(), project("skip-2"))
        deliver(informers.projects(), project("b"))
        assert await seen.names(3) == ["a", "a", "b"]
        await ctrl.queue.wait_idle()
        assert len(seen.requests) == 3


async def test_map_to_sees_old_and_new_so_a_move_requeues_both_nodes() -> None:
    """A per-node controller watching projects: a project moving from n1 to n2 queues both."""
    seen = Seen()
    builder = (
        Controller.for_(Node)
        .watches(
            Project, map_to=lambda c: {p.status.node_ref for p in c.objects if p.status.node_ref}
        )
        .reconcile(seen)
    )
    nodes = [node("n1"), node("n2"), node("n3")]
    async with running([], nodes, builder) as (informers, ctrl):
        await seen.names(3)
        await ctrl.queue.wait_idle()
        seen.requests.clear()
        projects = informers.projects()
        deliver(projects, project("p", ProjectPhase.SCHEDULED, "n1", rv=2))
        assert await seen.names(1) == ["n1"]
        await ctrl.queue.wait_idle()
        seen.requests.clear()
        deliver(projects, project("p", ProjectPhase.SCHEDULED, "n2", rv=3))
        assert await seen.names(2) == ["n1", "n2"]


async def test_watches_by_index_maps_a_node_to_its_projects_and_config_sets_workers() -> None:
    seen = Seen()
    builder = (
        Controller.for_(Project, indexers={"nodeRef": index_by_node_ref})
        .watches(Node, map_to=by_index("nodeRef"), predicate=phase_changed)
        .workers(3)
        .reconcile(seen)
    )
    projects = [
        project("p1", ProjectPhase.SCHEDULED, "n1"),
        project("p2", ProjectPhase.SCHEDULED, "n1"),
        project("p3", ProjectPhase.SCHEDULED, "n2"),
    ]
    async with running(projects, [node("n1"), node("n2")], builder, workers=5) as (
        informers,
        ctrl,
    ):
        assert ctrl.workers == 5  # ctx.config wins over the builder's default
        await seen.names(3)  # the projects (node adds map to the same, de-duplicated, keys)
        await ctrl.queue.wait_idle()
        seen.requests.clear()
        nodes = informers.nodes()
        deliver(nodes, node("n2", rv=7))  # a heartbeat: state unchanged → filtered
        deliver(nodes, node("n1", NodeState.NOT_READY, rv=8))
        assert await seen.names(2) == ["p1", "p2"]
        await ctrl.queue.wait_idle()
        assert len(seen.requests) == 2  # not p3


async def test_requeue_after_runs_on_the_fake_clock() -> None:
    clock = FakeClock()
    calls: list[str] = []
    woke = asyncio.Event()

    async def every_minute(req: Request[Project]) -> Result:
        calls.append(req.name)
        woke.set()
        return Result(requeue_after=60)

    builder = Controller.for_(Project).reconcile(every_minute)
    lws = {Project: StaticLW(Project, [project("a")]), Node: StaticLW(Node, [])}
    informers = InformerFactory(lambda m, o: lws[m], clock=clock)  # type: ignore[arg-type,return-value]
    ctx = ControllerContext("t", FakeClient(), informers, clock, {})  # type: ignore[arg-type]
    ctrl = builder(ctx)
    tasks = [asyncio.create_task(informers.run()), asyncio.create_task(ctrl.run())]
    try:
        async with asyncio.timeout(5):
            await woke.wait()
            woke.clear()
            await clock.advance(59)
            assert calls == ["a"]
            await clock.advance(1)
            await woke.wait()
        assert calls == ["a", "a"]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- observers, coalesced broadcasts, start and stop -------------------------------------------


async def test_an_observer_sees_every_event_before_the_enqueue_of_the_same_event() -> None:
    """State kept by an observer (Ready nodes) is current when the keys an event enqueued
    are reconciled, and the observer sees events that the filters drop."""
    ready: set[str] = set()
    observed: list[str] = []
    decisions: list[tuple[str, frozenset[str]]] = []
    woke = asyncio.Event()

    def track(c: Change[Node]) -> None:
        observed.append(c.object.metadata.name)
        if c.new is not None and c.new.status.state is NodeState.READY:
            ready.add(c.new.metadata.name)
        else:
            ready.discard(c.object.metadata.name)

    async def decide(req: Request[Project]) -> None:
        decisions.append((req.name, frozenset(ready)))
        woke.set()

    builder = (
        Controller.for_(Project, indexers={"phase": index_by_phase})
        .observe(Node, track)
        .with_filter(~predicate(lambda c: c.object.metadata.name.startswith("skip")))
        .watches(Node, map_to=keys_in_index("phase", "Pending"), predicate=phase_changed)
        .reconcile(decide)
    )
    async with running([project("p")], [node("n1", NodeState.NOT_READY)], builder) as (
        informers,
        ctrl,
    ):
        await ctrl.queue.wait_idle()
        assert decisions[0] == ("p", frozenset())
        decisions.clear()
        nodes = informers.nodes()
        deliver(nodes, node("skip-n", rv=3))  # filtered, yet observed
        deliver(nodes, node("n1", rv=4))  # Ready now: "p" is requeued
        async with asyncio.timeout(5):
            while not decisions:
                woke.clear()
                await woke.wait()
        assert decisions == [("p", frozenset({"n1", "skip-n"}))]
        assert observed == ["n1", "skip-n", "n1"]


async def test_a_coalesced_watch_maps_a_burst_of_events_once() -> None:
    """Five nodes turning Ready at once requeue the Pending projects with one map_to call;
    an uncoalesced watch calls it per event. keys_in_index yields only Pending projects."""
    calls = {"coalesced": 0, "each": 0}

    def counting(label: str) -> Any:
        pending = keys_in_index("phase", "Pending")

        def keys(c: Change[Any]) -> list[str]:
            calls[label] += 1
            return pending(c)

        return keys

    seen = Seen()
    builder = (
        Controller.for_(Project, indexers={"phase": index_by_phase})
        .watches(Node, map_to=counting("coalesced"), predicate=phase_changed, coalesce=True)
        .watches(Node, map_to=counting("each"), predicate=phase_changed)
        .reconcile(seen)
    )
    projects = [project("p1"), project("p2", ProjectPhase.SCHEDULED, "n0")]
    nodes = [node(f"n{i}", NodeState.NOT_READY) for i in range(5)]
    async with running(projects, nodes, builder) as (informers, ctrl):
        await seen.names(2)
        await ctrl.queue.wait_idle()
        calls.update(coalesced=0, each=0)
        seen.requests.clear()
        for i in range(5):  # one burst: the handler takes them in one go
            deliver(informers.nodes(), node(f"n{i}", rv=10 + i))
        assert await seen.names(1) == ["p1"]
        await ctrl.queue.wait_idle()
        assert calls == {"coalesced": 1, "each": 5}
        assert [r.name for r in seen.requests] == ["p1"]


async def test_the_controller_reconciles_only_once_its_handlers_saw_the_initial_list() -> None:
    """A handler registered with wait_for_handler (the builder registers its own) that is
    still busy with the initial list holds the workers back."""
    gate = asyncio.Event()
    reconciled: list[str] = []

    async def slow(_obj: Project) -> None:
        await gate.wait()

    async def reconcile(name: str) -> None:
        reconciled.append(name)

    lws = {Project: StaticLW(Project, [project("a")]), Node: StaticLW(Node, [])}
    informers = InformerFactory(lambda m, o: lws[m])  # type: ignore[arg-type,return-value]
    projects = informers.projects()
    ctrl: Controller[str] = Controller("t", reconcile)
    ctrl.watch(projects)
    ctrl.wait_for_handler(projects.add_handler(on_add=slow, name="slow"))
    assert len(ctrl.registrations) == 2
    tasks = [asyncio.create_task(informers.run()), asyncio.create_task(ctrl.run())]
    try:
        async with asyncio.timeout(5):
            await ctrl.registrations[0].wait_for_sync()  # "a" is queued
            for _ in range(20):
                await asyncio.sleep(0)  # let a worker take it, if one were running
            assert reconciled == [] and len(ctrl.queue) == 1
            gate.set()
            await ctrl.queue.wait_idle()
        assert reconciled == ["a"]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_reconciler_close_is_awaited_when_the_controller_stops() -> None:
    class Holding:
        def __init__(self) -> None:
            self.closed = False

        async def reconcile(self, name: str) -> None:
            return None

        async def close(self) -> None:
            self.closed = True

    holder = Holding()
    builder = Controller.for_(Project).complete(lambda _ctx: holder)
    async with running([project("a")], [], builder) as (_informers, ctrl):
        await ctrl.queue.wait_idle()
        assert not holder.closed
    assert holder.closed
