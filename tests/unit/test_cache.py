"""The informer cache, its indexers and the replace() difference; the fake clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from caravanserai.api import (
    Node,
    NodeState,
    NodeStatus,
    ObjectMeta,
    Project,
    ProjectPhase,
    ProjectSpec,
    ProjectStatus,
)
from caravanserai.informer import (
    Cache,
    DeltaType,
    FakeClock,
    index_by_label,
    index_by_node_ref,
    index_by_phase,
    index_by_state,
)


def proj(name: str, rv: int, phase: str = "Pending", node: str | None = None) -> Project:
    return Project(
        metadata=ObjectMeta(name=name, resource_version=str(rv), labels={"team": name[0]}),
        spec=ProjectSpec(),
        status=ProjectStatus(phase=ProjectPhase(phase), node_ref=node),
    )


def make_cache() -> Cache[Project]:
    return Cache(
        {"nodeRef": index_by_node_ref, "phase": index_by_phase, "team": index_by_label("team")}
    )


def names(objs: list[Project]) -> list[str]:
    return [o.metadata.name for o in objs]


def test_indexes_follow_updates_and_deletes() -> None:
    c = make_cache()
    c.upsert(proj("a1", 1, "Scheduled", "n1"))
    c.upsert(proj("a2", 2, "Running", "n1"))
    c.upsert(proj("b1", 3))
    assert names(c.by_index("nodeRef", "n1")) == ["a1", "a2"]
    assert names(c.by_index("phase", "Pending")) == ["b1"]
    assert names(c.by_index("team", "a")) == ["a1", "a2"]
    old = c.upsert(proj("a1", 4, "Pending", None))  # moved off the node
    assert old is not None and old.metadata.resource_version == "1"
    assert names(c.by_index("nodeRef", "n1")) == ["a2"]
    assert names(c.by_index("phase", "Pending")) == ["a1", "b1"]
    assert c.by_index("phase", "Scheduled") == []
    c.delete("a2")
    assert c.by_index("nodeRef", "n1") == []
    assert sorted(c.index_values("phase")) == ["Pending"]
    assert c.delete("nope") is None
    with pytest.raises(KeyError):
        c.by_index("missing", "x")


def test_add_indexer_later_indexes_existing_objects() -> None:
    c: Cache[Project] = Cache()
    c.upsert(proj("a", 1, node="n2"))
    c.add_indexer("nodeRef", index_by_node_ref)
    c.add_indexer("nodeRef", index_by_node_ref)  # same function: fine
    assert names(c.by_index("nodeRef", "n2")) == ["a"]
    with pytest.raises(ValueError):
        c.add_indexer("nodeRef", index_by_phase)


def test_replace_returns_exact_difference() -> None:
    c = make_cache()
    for p in (proj("same", 1), proj("changed", 2), proj("gone", 3, "Running", "n1")):
        c.upsert(p)
    deltas = c.replace([proj("same", 1), proj("changed", 9, "Scheduled"), proj("new", 10)], "10")
    assert [(d.type, d.name) for d in deltas] == [
        (DeltaType.UPDATED, "changed"),
        (DeltaType.ADDED, "new"),
        (DeltaType.DELETED, "gone"),
    ]
    upd = deltas[0]
    assert upd.old is not None and upd.old.metadata.resource_version == "2"
    gone = deltas[2]
    assert gone.new.status.node_ref == "n1", "a delete carries the last known state"
    assert c.resource_version == "10"
    assert sorted(c.keys()) == ["changed", "new", "same"]
    assert c.by_index("nodeRef", "n1") == []


def test_node_state_index() -> None:
    c: Cache[Node] = Cache({"state": index_by_state})
    c.upsert(Node(metadata=ObjectMeta(name="n1"), status=NodeStatus(state=NodeState.READY)))
    c.upsert(Node(metadata=ObjectMeta(name="n2")))
    assert names(c.by_index("state", "Ready")) == ["n1"]  # type: ignore[arg-type]


async def test_fake_clock_sleeps_timers_and_timeouts() -> None:
    clock = FakeClock()
    start = clock.now()
    woke: list[float] = []

    async def sleeper(d: float) -> None:
        await clock.sleep(d)
        woke.append(clock.monotonic())

    tasks = [asyncio.create_task(sleeper(d)) for d in (3, 1, 2)]
    fired: list[str] = []
    handle = clock.call_later(1.5, lambda: fired.append("cancelled"))
    handle.cancel()
    clock.call_later(2.5, lambda: fired.append("x"))
    await clock.advance(10)
    assert woke == [1, 2, 3]
    assert fired == ["x"]
    assert clock.now() - start == timedelta(seconds=10)
    assert clock.until(start + timedelta(seconds=15)) == 5
    assert clock.until(start) == 0
    await asyncio.gather(*tasks)

    async def slow() -> None:
        async with clock.timeout(5):
            await asyncio.Event().wait()

    t = asyncio.create_task(slow())
    await clock.advance(4.9)
    assert not t.done()
    await clock.advance(0.2)
    with pytest.raises(TimeoutError):
        await t

    async def fast() -> str:
        async with clock.timeout(5):
            await clock.sleep(1)
        return "ok"

    t2 = asyncio.create_task(fast())
    await clock.advance(10)
    assert await t2 == "ok"


async def test_fake_clock_timeout_does_not_swallow_outer_cancel() -> None:
    clock = FakeClock()

    async def guarded() -> None:
        async with clock.timeout(5):
            await asyncio.Event().wait()

    t = asyncio.create_task(guarded())
    await clock.advance(1)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
