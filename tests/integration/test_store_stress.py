"""Concurrency stress: many writers, rollbacks, several watchers in two "processes".

Every committed write must reach every watcher exactly once, in strictly increasing
revision order, and replaying a watcher's events must give what a fresh list shows —
also while the LISTEN connections are being killed mid-run, and with a ring so small
that watchers keep falling off it and read the log instead.

Both stores run with the hub's fallback poll off (``notify_only_poll``), so a write
reaches a watcher only through its NOTIFY or a reconnect's catch-up. Mutations these
tests were checked against (each makes the named cases fail; the docstrings say which):

- every ``pg_notify(...)`` in ``store/postgres.py`` replaced with ``NULL``;
- the hub's log fallback broken: ``WatchHub._from_log`` returning no events, or dropping
  the first event of each page it reads.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from test_store_support import (
    StoreFactory,
    keyed,
    kill_listeners,
    project,
    replay,
)

from caravanserai.api.problems import AlreadyExists, Conflict, NotFound
from caravanserai.api.selectors import Selector
from caravanserai.api.watch import EventType
from caravanserai.store.hub import HubWatch
from caravanserai.store.postgres import PostgresStore
from caravanserai.store.types import Obj, StoreEvent, Watch

WRITERS = 16
OPS_PER_WRITER = 60
NAMES = [f"p{i:02d}" for i in range(24)]
SELECTOR = Selector.parse("tier=web", "status.phase!=Failed")


class Boom(Conflict):
    """Raised by a mutator after the row is locked: the transaction must leave no trace."""


@dataclass
class Progress:
    """Operations attempted by all writers, and a hook run when a milestone is crossed."""

    milestones: list[int] = field(default_factory=list)
    on_milestone: Callable[[], Awaitable[None]] | None = None
    ops: int = 0

    async def step(self) -> None:
        self.ops += 1
        if self.on_milestone is not None and self.ops in self.milestones:
            await self.on_milestone()


async def writer(
    store: PostgresStore, seed: int, committed: list[int], progress: Progress
) -> None:
    rng = random.Random(seed)
    for i in range(OPS_PER_WRITER):
        await progress.step()
        name = rng.choice(NAMES)
        op = rng.random()
        try:
            if op < 0.25:
                tier = rng.choice(["web", "db"])
                obj = await store.create(project(name, labels={"tier": tier}))
            elif op < 0.45:
                def spec(o: Obj, i: int = i) -> Obj:
                    o["spec"]["n"] = f"{seed}-{i}"
                    o["metadata"]["labels"] = {"tier": rng.choice(["web", "db"])}
                    return o
                obj = await store.update("Project", name, spec)
            elif op < 0.70:
                def status(o: Obj, i: int = i) -> Obj:
                    o["status"] = {"phase": rng.choice(["Pending", "Running", "Failed"]),
                                   "observed": f"{seed}-{i}"}
                    return o
                obj = await store.update("Project", name, status)
            elif op < 0.85:
                obj = await store.delete("Project", name)
            elif op < 0.93:
                def explode(o: Obj) -> Obj:
                    o["status"] = {"phase": "Running"}
                    raise Boom("refused after the row lock was taken")
                await store.update("Project", name, explode)
                raise AssertionError("unreachable")
            else:
                await raw_rollback(store, name)
                continue
        except (NotFound, AlreadyExists, Boom):
            continue
        committed.append(int(obj["metadata"]["resourceVersion"]))


async def raw_rollback(store: PostgresStore, name: str) -> None:
    """A transaction that takes the counter (and writes) and then rolls back."""
    async with await psycopg.AsyncConnection.connect(store.dsn) as conn:
        await conn.execute("SELECT 1 FROM cara_objects WHERE name = %s FOR UPDATE", (name,))
        await conn.execute("UPDATE cara_revision SET rev = rev + 1")
        await conn.execute(
            "INSERT INTO cara_events (revision, kind, name, type, object) "
            "SELECT rev, 'Project', %s, 'MODIFIED', '{}' FROM cara_revision", (name,))
        await conn.execute("SELECT pg_notify('cara_events', rev::text) FROM cara_revision")
        await asyncio.sleep(0.002)  # hold the counter a moment so others queue behind it
        await conn.rollback()


STALL_AFTER = 20.0  # seconds after the last write for every watcher to be served it
TOTAL_OPS = WRITERS * OPS_PER_WRITER


def selector_of(label: str, watches: list[tuple[str, Any, Selector | None, float]]) -> Any:
    return next(sel for name, _, sel, _ in watches if name == label)


async def consume(
    w: Watch, out: list[StoreEvent], done: asyncio.Event, final: list[int], delay: float
) -> None:
    """Read events until the watcher has been served up to the final revision."""
    while not (done.is_set() and w.revision >= final[0]):
        ev = await w.next(timeout=0.2)
        if ev is not None:
            out.append(ev)
            if delay:
                await asyncio.sleep(delay)  # a slow consumer: falls off a small ring


class ListenerKiller:
    """Kills every hub's LISTEN backend when the writers cross a milestone.

    Fired from inside a writer, so every scheduled kill happens while writes are in
    flight, whatever the machine's speed. Before each kill it waits (a condition, not a
    sleep) until both hubs have reconnected with a new backend, so each kill hits both.
    """

    def __init__(self, stores: list[PostgresStore]) -> None:
        self.stores = stores
        self.killed_pids: set[int] = set()
        self.kills: list[int] = []

    def _listening(self) -> list[int] | None:
        pids = [s.hub.listener_pid for s in self.stores]
        if any(p is None or p in self.killed_pids for p in pids):
            return None
        return [p for p in pids if p is not None]

    async def __call__(self) -> None:
        async with asyncio.timeout(15):
            while True:  # the hubs reconnect with backoff; no event to await
                if (pids := self._listening()) is not None:
                    break
                await asyncio.sleep(0.01)
        self.killed_pids.update(pids)
        self.kills.append(await kill_listeners(self.stores[0].dsn))


SCENARIOS = {
    # (ring size, listener kills): the default ring holds the whole run
    "notify": (20_000, False),
    "listener-killed": (20_000, True),
    # a ring of 1 (trimmed above 2): watchers that start behind it mid-run (one of them
    # slow) catch up from the log while the writers go on
    "small-ring": (1, False),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_concurrent_writers_and_watchers(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch, scenario: str
) -> None:
    """Every committed write reaches every watcher once, in order, and nothing else.

    Catches: ``pg_notify`` -> NULL (all three cases: the watchers stall, since the poll
    is off); the log fallback returning nothing or dropping an event per page
    (``small-ring``: "lost or extra events"; it also proves the fallback ran,
    see ``log_reads``). ``listener-killed`` fires all three kills every run.
    """
    ring_size, kill_listener = SCENARIOS[scenario]
    store = await store_factory(ring_size=ring_size)
    other = await store_factory(ring_size=ring_size, pool_max=8)  # a second "process"
    log_reads = [0]
    for s in (store, other):
        from_log = s.hub._from_log

        async def counted(*args: Any, _from_log: Any = from_log) -> Any:
            log_reads[0] += 1
            return await _from_log(*args)

        monkeypatch.setattr(s.hub, "_from_log", counted)
    start = await store.current_revision()
    watches: list[tuple[str, HubWatch, Selector | None, float]] = [
        ("a-project", store.watch("Project", start), None, 0.0),
        ("a-all", store.watch(None, start), None, 0.0),
        ("a-selector", store.watch("Project", start, SELECTOR), SELECTOR, 0.0),
        ("a-slow", store.watch(None, start), None, 0.002),
        ("b-project", other.watch("Project", start), None, 0.0),
        ("b-selector", other.watch("Project", start, SELECTOR), SELECTOR, 0.0),
    ]
    for _, w, _, _ in watches:
        await w.start()
    seen: dict[str, list[StoreEvent]] = {label: [] for label, _, _, _ in watches}
    committed: list[int] = []
    done = asyncio.Event()
    final = [0]
    killer = ListenerKiller([store, other])
    progress = Progress()
    # Caught-up watchers are handed each event as the hub reads it; only a watcher that is
    # behind reads the log. So with a small ring, late watchers start from ``start`` a
    # third of the way in, and must catch up from the log while the writes go on.
    late_started = asyncio.Event()
    if kill_listener:
        progress.milestones = [TOTAL_OPS * k // 4 for k in (1, 2, 3)]
        progress.on_milestone = killer
    elif ring_size < 100:
        async def start_late() -> None:
            late_started.set()

        progress.milestones = [TOTAL_OPS // 3]
        progress.on_milestone = start_late

    late_consumers: list[asyncio.Task[None]] = []

    async def late_watchers() -> None:
        await late_started.wait()
        late = [
            ("late-all", store.watch(None, start), None, 0.0),
            ("late-slow", other.watch("Project", start), None, 0.002),
            ("late-selector", store.watch("Project", start, SELECTOR), SELECTOR, 0.0),
        ]
        for label, w, _, delay in late:
            await w.start()
            seen[label] = []
            watches.append((label, w, selector_of(label, late), delay))
            late_consumers.append(tg.create_task(consume(w, seen[label], done, final, delay)))

    async with asyncio.TaskGroup() as tg:
        consumers = [
            tg.create_task(consume(w, seen[label], done, final, delay))
            for label, w, _, delay in watches
        ]
        late_task = (
            tg.create_task(late_watchers()) if ring_size < 100 and not kill_listener else None
        )
        async with asyncio.timeout(90):
            await asyncio.gather(*(
                writer(store if i % 2 else other, i, committed, progress)
                for i in range(WRITERS)
            ))
        final[0] = await store.current_revision()
        done.set()
        late_started.set()  # (a run too short to reach the milestone still starts them)
        if late_task is not None:
            await late_task  # every late consumer exists now
        _, pending = await asyncio.wait(consumers + late_consumers, timeout=STALL_AFTER)
        stalled = [f"{label} at {w.revision}" for label, w, _, _ in watches
                   if w.revision < final[0]]
        for task in pending:
            task.cancel()
    assert not stalled, f"watchers not served up to {final[0]} (from {start}): {stalled}"

    if kill_listener:
        assert killer.kills == [2, 2, 2], killer.kills  # every kill hit both processes
    if ring_size < 100:
        assert log_reads[0] > 0, "the log fallback never ran"
    # Revisions are dense: exactly the committed writes, numbered start+1..final.
    assert sorted(committed) == list(range(start + 1, final[0] + 1))
    assert len(committed) > 300

    current: dict[str, Any] = keyed((await store.list("Project")).items)
    for label, w, selector, _ in watches:
        events = seen[label]
        revisions = [e.revision for e in events]
        assert revisions == sorted(set(revisions)), f"{label}: not strictly increasing"
        assert w.revision == final[0]
        for e in events:
            assert e.object["metadata"]["resourceVersion"] == str(e.revision)
        if selector is None:
            assert revisions == sorted(committed), f"{label}: lost or extra events"
            assert replay(events) == current, label
        else:
            expected = {k: v for k, v in current.items() if selector.matches(v)}
            assert replay(events) == expected, label
            # a selector watcher only ever sees objects that matched on their way in or out
            for e in events:
                if e.type is EventType.DELETED:
                    assert selector.matches(e.old_object) or selector.matches(e.object)
                else:
                    assert selector.matches(e.object)
    for _, w, _, _ in watches:
        await w.aclose()
