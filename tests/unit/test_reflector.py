"""The reflector against a scripted ListerWatcher, in virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from caravanserai.api import (
    EventType,
    Expired,
    ObjectMeta,
    Project,
    ProjectPhase,
    ProjectSpec,
    ProjectStatus,
)
from caravanserai.api.problems import TooLargeResourceVersion
from caravanserai.client import ListOptions, ObjectList, WatchEvent
from caravanserai.informer import (
    Backoff,
    Cache,
    Delta,
    DeltaType,
    FakeClock,
    Reflector,
    SharedInformer,
    index_by_phase,
)

END = object()  # the stream ends cleanly
HANG = object()  # the stream goes silent forever


def proj(name: str, rv: int, phase: str = "Pending") -> Project:
    return Project(
        metadata=ObjectMeta(name=name, resource_version=str(rv)),
        spec=ProjectSpec(),
        status=ProjectStatus(phase=ProjectPhase(phase)),
    )


def ev(type_: str, name: str, rv: int, phase: str = "Pending") -> WatchEvent[Project]:
    return WatchEvent(EventType(type_), proj(name, rv, phase), str(rv))


def bookmark(rv: int) -> WatchEvent[Project]:
    return WatchEvent(EventType.BOOKMARK, None, str(rv))


def expired() -> WatchEvent[Project]:
    return WatchEvent(EventType.ERROR, None, "", Expired("too old"))


class ScriptedLW:
    """Lists and watch streams play back scripts; records every call."""

    model = Project
    description = "scripted"

    def __init__(self, lists: list[Any], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.list_calls = 0
        self.watch_calls: list[str] = []
        self.closed = 0

    async def list(self) -> ObjectList[Project]:
        self.list_calls += 1
        step = self.lists.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    async def watch(
        self, resource_version: str, *, timeout_seconds: int | None = None
    ) -> AsyncIterator[WatchEvent[Project]]:
        self.watch_calls.append(resource_version)
        script = self.watches.pop(0) if self.watches else [HANG]
        try:
            for step in script:
                if step is END:
                    return
                if step is HANG:
                    await asyncio.Event().wait()
                if isinstance(step, BaseException):
                    raise step
                yield step  # type: ignore[misc]
            await asyncio.Event().wait()  # scripts that do not END stay open
        finally:
            self.closed += 1


def listing(rv: int, *objs: Project) -> ObjectList[Project]:
    return ObjectList(list(objs), str(rv))


class Harness:
    def __init__(self, lw: ScriptedLW, **kw: Any) -> None:
        self.clock = FakeClock()
        self.cache: Cache[Project] = Cache({"phase": index_by_phase})
        self.deltas: list[tuple[DeltaType, str, str | None]] = []
        kw.setdefault("backoff", Backoff(0.8, 30, jitter=0))
        self.reflector = Reflector(
            lw, self.cache, on_deltas=self.record, clock=self.clock, **kw
        )
        self.lw = lw

    def record(self, deltas: list[Delta[Project]]) -> None:
        for d in deltas:
            self.deltas.append((d.type, d.name, d.new.metadata.resource_version))

    async def until(self, cond: Callable[[], bool], step: float = 0.1, limit: float = 600) -> None:
        waited = 0.0
        await self.clock.advance(0)
        while not cond():
            if waited > limit:
                raise AssertionError("condition not met in virtual time")
            await self.clock.advance(step)
            waited += step

    def names(self) -> dict[str, str | None]:
        return {p.metadata.name: p.metadata.resource_version for p in self.cache.list()}


@pytest.fixture
async def run_reflector() -> AsyncIterator[Callable[[Harness], None]]:
    tasks: list[asyncio.Task[None]] = []

    def start(h: Harness) -> None:
        tasks.append(asyncio.create_task(h.reflector.run()))

    yield start
    for t in tasks:
        t.cancel()
    for t in tasks:
        with pytest.raises(asyncio.CancelledError):
            await t


async def test_list_then_watch_from_list_revision(run_reflector: Callable[[Harness], None]) -> None:
    lw = ScriptedLW(
        [listing(10, proj("a", 5), proj("b", 7))],
        [[ev("ADDED", "c", 11), ev("MODIFIED", "a", 12, "Scheduled"), ev("DELETED", "b", 13)]],
    )
    h = Harness(lw)
    run_reflector(h)
    await h.until(lambda: h.reflector.resource_version == "13")
    assert lw.watch_calls == ["10"]
    assert h.deltas == [
        (DeltaType.ADDED, "a", "5"),
        (DeltaType.ADDED, "b", "7"),
        (DeltaType.ADDED, "c", "11"),
        (DeltaType.UPDATED, "a", "12"),
        (DeltaType.DELETED, "b", "13"),
    ]
    assert h.names() == {"a": "12", "c": "11"}
    assert [p.metadata.name for p in h.cache.by_index("phase", "Scheduled")] == ["a"]
    assert h.reflector.synced.is_set()


async def test_dropped_stream_resumes_from_last_revision_without_relist(
    run_reflector: Callable[[Harness], None],
) -> None:
    lw = ScriptedLW(
        [listing(10, proj("a", 5))],
        [
            [ev("ADDED", "b", 11), ev("MODIFIED", "a", 12), ConnectionResetError("reset")],
            [bookmark(20), END],  # a clean end after a bookmark
            [ev("MODIFIED", "b", 21)],
        ],
    )
    h = Harness(lw)
    run_reflector(h)
    await h.until(lambda: len(lw.watch_calls) == 3)
    await h.until(lambda: h.reflector.resource_version == "21")
    assert lw.watch_calls == ["10", "12", "20"], "resume from the last event, then the bookmark"
    assert lw.list_calls == 1, "no relist"
    assert [d[:2] for d in h.deltas] == [
        (DeltaType.ADDED, "a"),
        (DeltaType.ADDED, "b"),
        (DeltaType.UPDATED, "a"),
        (DeltaType.UPDATED, "b"),
    ]
    assert lw.closed >= 2


async def test_expired_relists_and_delivers_the_difference(
    run_reflector: Callable[[Harness], None],
) -> None:
    lw = ScriptedLW(
        [
            listing(10, proj("a", 1), proj("b", 2), proj("c", 3)),
            # after 410: a unchanged, b modified, c deleted, d created
            listing(50, proj("a", 1), proj("b", 40, "Scheduled"), proj("d", 45)),
            listing(70, proj("a", 1), proj("d", 45)),
        ],
        [
            [ev("MODIFIED", "a", 1), expired()],  # the duplicate is dropped
            [ev("ADDED", "e", 51), Expired("gone")],  # raised instead of an ERROR event
            [],
        ],
    )
    h = Harness(lw)
    run_reflector(h)
    await h.until(lambda: lw.list_calls == 3 and len(lw.watch_calls) == 3)
    assert lw.watch_calls == ["10", "50", "70"]
    assert h.deltas == [
        (DeltaType.ADDED, "a", "1"),
        (DeltaType.ADDED, "b", "2"),
        (DeltaType.ADDED, "c", "3"),
        # relist 1
        (DeltaType.UPDATED, "b", "40"),
        (DeltaType.ADDED, "d", "45"),
        (DeltaType.DELETED, "c", "3"),
        # watch
        (DeltaType.ADDED, "e", "51"),
        # relist 2: b and e were deleted while we could not see
        (DeltaType.DELETED, "b", "40"),
        (DeltaType.DELETED, "e", "51"),
    ]
    assert h.names() == {"a": "1", "d": "45"}
    assert h.cache.by_index("phase", "Scheduled") == []


async def test_errors_back_off_exponentially(run_reflector: Callable[[Harness], None]) -> None:
    boom = ConnectionRefusedError("refused")
    lw = ScriptedLW([boom, boom, boom, boom, listing(5, proj("a", 5))], [])
    h = Harness(lw)
    run_reflector(h)
    await h.clock.advance(0)
    expected_gaps = [0.8, 1.6, 3.2, 6.4]
    due = 0.0
    for attempt, gap in enumerate(expected_gaps, start=1):
        assert lw.list_calls == attempt
        due += gap
        await h.clock.advance(due - 0.005 - h.clock.monotonic())
        assert lw.list_calls == attempt, f"retried before {gap} s"
        await h.clock.advance(due + 0.005 - h.clock.monotonic())
    assert lw.list_calls == 5
    assert h.reflector.synced.is_set()
    assert h.reflector.backoff.attempts == 4  # reset only once a watch makes progress


def test_backoff_caps_with_jitter() -> None:
    import random

    b = Backoff(0.8, 30, jitter=1.0, rng=random.Random(1))
    delays = [b.next() for _ in range(12)]
    assert all(0.8 <= d <= 30 for d in delays)
    assert delays[-1] == 30
    b.reset()
    assert b.next() < 1.6


async def test_silent_stream_is_dropped_and_resumed(
    run_reflector: Callable[[Harness], None],
) -> None:
    lw = ScriptedLW(
        [listing(10)],
        [[ev("ADDED", "a", 11), HANG], [bookmark(12), HANG], [ev("ADDED", "b", 13)]],
    )
    h = Harness(lw, liveness_timeout=30)
    run_reflector(h)
    await h.until(lambda: len(lw.watch_calls) == 1)
    await h.clock.advance(29)
    assert len(lw.watch_calls) == 1, "not before the liveness timeout"
    await h.until(lambda: len(lw.watch_calls) == 2)
    assert h.clock.monotonic() >= 30
    await h.until(lambda: len(lw.watch_calls) == 3)
    await h.until(lambda: "b" in h.names())
    assert lw.watch_calls == ["10", "11", "12"]
    assert lw.list_calls == 1


async def test_clean_end_without_events_does_not_spin(
    run_reflector: Callable[[Harness], None],
) -> None:
    lw = ScriptedLW([listing(3)], [[END], [END], [END], [END]])
    h = Harness(lw)
    run_reflector(h)
    await h.clock.advance(1.0)
    assert len(lw.watch_calls) <= 2


async def test_informer_handlers_see_every_change_in_order() -> None:
    lw = ScriptedLW(
        [listing(10, proj("a", 5)), listing(30, proj("b", 22))],
        [[ev("ADDED", "b", 11), ev("MODIFIED", "b", 12), expired()], []],
    )
    clock = FakeClock()
    inf = SharedInformer(lw, clock=clock, backoff=Backoff(jitter=0), resync_period=60)
    seen: list[str] = []
    late: list[str] = []

    async def on_update(old: Project, new: Project) -> None:
        await asyncio.sleep(0)
        seen.append(f"upd {new.metadata.name} {old.metadata.resource_version}->"
                    f"{new.metadata.resource_version}")

    def broken(obj: Project) -> None:
        raise RuntimeError("handler bug")

    inf.add_handler(
        on_add=lambda p: seen.append(f"add {p.metadata.name}"),
        on_update=on_update,
        on_delete=lambda p: seen.append(f"del {p.metadata.name}"),
    )
    inf.add_handler(on_add=broken)  # must not disturb the others
    task = asyncio.create_task(inf.run())
    await inf.wait_for_sync()
    await clock.advance(1)
    assert seen == ["add a", "add b", "upd b 11->12", "upd b 12->22", "del a"]
    reg = inf.add_handler(on_add=lambda p: late.append(p.metadata.name))
    await reg.wait_for_sync()
    assert late == ["b"]
    seen.clear()
    await clock.advance(60)
    assert seen == ["upd b 22->22"], "resync"
    assert inf.get("b") is not None and inf.get("a") is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_list_options_selector_matches_query() -> None:
    opts = ListOptions.of(label_selector="app=web", phase=["Running", "Pending"], node_ref="n1")
    assert opts.to_params() == [
        ("labelSelector", "app=web"),
        ("phase", "Pending"),
        ("phase", "Running"),
        ("nodeRef", "n1"),
    ]
    sel = opts.to_selector()
    obj: dict[str, Any] = proj("x", 1, "Running").to_wire()
    obj["metadata"]["labels"] = {"app": "web"}
    obj["status"]["nodeRef"] = "n1"
    assert sel.matches(obj)
    obj["status"]["phase"] = "Failed"
    assert not sel.matches(obj)


async def test_a_revision_ahead_of_the_server_relists(
    run_reflector: Callable[[Harness], None],
) -> None:
    # After a database failover the new primary may never reach the revision we hold:
    # retrying the watch from it would wait forever, a fresh list is the way out.
    lw = ScriptedLW(
        [listing(10, proj("a", 5)), listing(8, proj("b", 7))],
        [[TooLargeResourceVersion("resourceVersion 10 is ahead of this server")], []],
    )
    h = Harness(lw)
    run_reflector(h)
    await h.until(lambda: lw.list_calls == 2 and len(lw.watch_calls) == 2)
    assert lw.watch_calls == ["10", "8"]
    assert [d[:2] for d in h.deltas] == [
        (DeltaType.ADDED, "a"), (DeltaType.ADDED, "b"), (DeltaType.DELETED, "a")]
