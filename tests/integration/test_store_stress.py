"""Concurrency stress: many writers, rollbacks, several watchers in two "processes".

Every committed write must reach every watcher exactly once, in strictly increasing
revision order, and replaying a watcher's events must give what a fresh list shows —
also while the LISTEN connections are being killed mid-run.
"""

from __future__ import annotations

import asyncio
import random
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


async def writer(store: PostgresStore, seed: int, committed: list[int]) -> None:
    rng = random.Random(seed)
    for i in range(OPS_PER_WRITER):
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


async def consume(w: Watch, out: list[StoreEvent], done: asyncio.Event, final: list[int]) -> None:
    """Read events until the watcher has been served up to the final revision."""
    while not (done.is_set() and w.revision >= final[0]):
        ev = await w.next(timeout=0.2)
        if ev is not None:
            out.append(ev)


async def killer(store: PostgresStore, done: asyncio.Event, kills: list[int]) -> None:
    """Terminate every hub's LISTEN backend a few times while the writers run."""
    while not done.is_set() and len(kills) < 3:
        if await store.current_revision() >= 150 * (len(kills) + 1):
            kills.append(await kill_listeners(store.dsn))
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("kill_listener", [False, True], ids=["steady", "listener-killed"])
async def test_concurrent_writers_and_watchers(
    store: PostgresStore, store_factory: StoreFactory, kill_listener: bool
) -> None:
    other = await store_factory(pool_max=8)  # a second "process" on the same database
    start = await store.current_revision()
    watches: list[tuple[str, HubWatch, Selector | None]] = [
        ("a-project", store.watch("Project", start), None),
        ("a-all", store.watch(None, start), None),
        ("a-selector", store.watch("Project", start, SELECTOR), SELECTOR),
        ("b-project", other.watch("Project", start), None),
        ("b-selector", other.watch("Project", start, SELECTOR), SELECTOR),
    ]
    for _, w, _ in watches:
        await w.start()
    seen: dict[str, list[StoreEvent]] = {label: [] for label, _, _ in watches}
    committed: list[int] = []
    done = asyncio.Event()
    final = [0]
    kills: list[int] = []

    async with asyncio.timeout(60):
        async with asyncio.TaskGroup() as tg:
            for label, w, _ in watches:
                tg.create_task(consume(w, seen[label], done, final))
            if kill_listener:
                tg.create_task(killer(store, done, kills))
            writers = [
                tg.create_task(writer(store if i % 2 else other, i, committed))
                for i in range(WRITERS)
            ]
            await asyncio.gather(*writers)
            final[0] = await store.current_revision()
            done.set()

    if kill_listener:
        assert kills and all(k == 2 for k in kills), kills  # both processes' listeners died
    # Revisions are dense: exactly the committed writes, numbered start+1..final.
    assert sorted(committed) == list(range(start + 1, final[0] + 1))
    assert len(committed) > 300

    current: dict[str, Any] = keyed((await store.list("Project")).items)
    for label, w, selector in watches:
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
    for _, w, _ in watches:
        await w.aclose()
