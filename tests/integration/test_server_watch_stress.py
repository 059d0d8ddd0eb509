"""HTTP watch under stress: concurrent writers (with rollbacks) through two cara-server
replicas, several NDJSON watchers on each, the LISTEN connections killed mid-run, and one
watcher per replica dropped and resumed from its last revision.

Every stream is checked event by event: each revision exactly once, in order, none
missing (only Projects are written, and revisions are dense, so a Project watch must see
exactly ``start+1 .. final``); replaying it gives what a fresh list shows; and every
watcher on both replicas saw the very same events (full equality, not a common prefix).

Both replicas' stores run with the hub's fallback poll off (``notify_only_poll``), so
delivery depends on NOTIFY. Mutations checked: every ``pg_notify`` in
``store/postgres.py`` replaced with NULL makes this test fail (the streams stall short of
the final revision).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from server_support import make_config, manifest
from test_store_stress import raw_rollback
from test_store_support import kill_listeners

from caravanserai.server.app import create_app
from caravanserai.server.state import RECORDER
from caravanserai.store.postgres import PostgresStore

StoreFactory = Callable[..., Awaitable[PostgresStore]]

WRITERS = 8
OPS_PER_WRITER = 40
NAMES = [f"h{i:02d}" for i in range(10)]
WATCHERS_PER_REPLICA = 3
STALL_AFTER = 20.0  # seconds after the last write for every stream to reach it


@dataclass
class Replica:
    name: str
    store: PostgresStore
    server: TestServer
    base: str = ""


@contextlib.asynccontextmanager
async def replicas(store_factory: StoreFactory, database_url: str) -> AsyncIterator[
    list[Replica]
]:
    out: list[Replica] = []
    try:
        for name in ("a", "b"):
            store = await store_factory(pool_max=12)
            app = create_app(make_config(database_url), store)
            # This test proves that project writes reach watchers densely; the server's own
            # Events (a project Created, Deleting), written in the background, would take
            # revisions in between. Closed, its recorder drops them.
            await app[RECORDER].aclose()
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            out.append(Replica(name, store, server, str(server.make_url("")).rstrip("/")))
        yield out
    finally:
        for r in out:
            await r.server.close()


@dataclass
class Watcher:
    """One NDJSON watch stream (re-opened from its last revision when ``resume`` asks)."""

    label: str
    base: str
    http: aiohttp.ClientSession
    start: int
    events: list[dict[str, Any]] = field(default_factory=list)
    revision: int = 0
    streams: int = 0

    async def run(self, final: list[int], done: asyncio.Event, drop_at: int | None) -> None:
        self.revision = self.start
        while not (done.is_set() and self.revision >= final[0]):
            self.streams += 1
            params = {"watch": "true", "resourceVersion": str(self.revision),
                      "allowWatchBookmarks": "true"}
            async with self.http.get(f"{self.base}/api/v1/projects", params=params,
                                     timeout=aiohttp.ClientTimeout(total=None)) as resp:
                assert resp.status == 200, await resp.text()
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    assert event["type"] != "ERROR", f"{self.label}: {event}"
                    rv = int(event["object"]["metadata"]["resourceVersion"])
                    if event["type"] != "BOOKMARK":
                        self.events.append(event)
                    self.revision = max(self.revision, rv)
                    if done.is_set() and self.revision >= final[0]:
                        return
                    if drop_at is not None and self.revision >= drop_at:
                        drop_at = None
                        break  # drop the connection; the loop resumes from self.revision


async def writer(base: str, other: str, http: aiohttp.ClientSession, seed: int,
                 store: PostgresStore, counts: Counter[str],
                 milestone: Callable[[], Awaitable[None]]) -> None:
    """Creates, stale and fresh PUTs, status PATCHes and deletes through both replicas;
    conflicts (409), refused transitions and raw aborted transactions roll back."""
    rng = random.Random(seed)
    for i in range(OPS_PER_WRITER):
        await milestone()
        url = rng.choice((base, other))
        name = rng.choice(NAMES)
        op = rng.random()
        if op < 0.08:
            await raw_rollback(store, name)
            counts["aborted"] += 1
            continue
        if op < 0.35:
            req = http.post(f"{url}/api/v1/projects", json=manifest(name))
        elif op < 0.65:
            async with http.get(f"{url}/api/v1/projects/{name}") as r:
                if r.status != 200:
                    continue
                body = await r.json()
            body["metadata"].setdefault("labels", {})["w"] = f"{seed}-{i}"
            if rng.random() < 0.3:  # a stale precondition: must be refused with 409
                body["metadata"]["resourceVersion"] = "1"
            req = http.put(f"{url}/api/v1/projects/{name}", json=body)
        elif op < 0.85:
            phase = rng.choice(["Scheduled", "Running", "Failed", "Pending"])
            req = http.patch(f"{url}/api/v1/projects/{name}/status",
                             json={"phase": phase, "nodeRef": "n1"})
        else:
            req = http.delete(f"{url}/api/v1/projects/{name}")
        async with req as r:
            await r.read()
            assert r.status < 500, (r.status, await r.text())
            counts["ok" if r.status < 300 else str(r.status)] += 1


async def test_http_watchers_on_two_replicas_see_every_revision_once(
    store_factory: StoreFactory, database_url: str
) -> None:
    """Catches ``pg_notify`` -> NULL (streams stall); would catch a resume that skips or
    repeats an event, a replica that drops one, or events out of order."""
    async with (
        replicas(store_factory, database_url) as (a, b),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
    ):
        start = await a.store.current_revision()
        watchers = [
            Watcher(f"{r.name}{i}", r.base, http, start)
            for r in (a, b) for i in range(WATCHERS_PER_REPLICA)
        ]
        counts: Counter[str] = Counter()
        final = [0]
        done = asyncio.Event()
        ops = [0]
        kills: list[int] = []
        total = WRITERS * OPS_PER_WRITER

        async def milestone() -> None:
            ops[0] += 1
            if ops[0] == total // 2:  # mid-run: both replicas' listeners die
                kills.append(await kill_listeners(a.store.dsn))

        async with asyncio.TaskGroup() as tg:
            readers = [
                # the first watcher on each replica drops its stream a third of the way in
                tg.create_task(w.run(final, done, start + 60 if w.label.endswith("0") else None))
                for w in watchers
            ]
            async with asyncio.timeout(60):
                await asyncio.gather(*(
                    writer(a.base, b.base, http, i, a.store, counts, milestone)
                    for i in range(WRITERS)
                ))
            final[0] = await a.store.current_revision()
            done.set()
            _, pending = await asyncio.wait(readers, timeout=STALL_AFTER)
            stalled = [f"{w.label} at {w.revision}" for w in watchers if w.revision < final[0]]
            for task in pending:
                task.cancel()
        assert not stalled, f"streams not served up to {final[0]} (from {start}): {stalled}"

        assert kills == [2], kills  # both replicas' LISTEN connections were killed
        # Enough of each kind of write happened (the mix depends on interleaving: a PATCH to
        # a project deleted meanwhile is a 404, a refused transition a 409 or 422).
        assert counts["ok"] > 50 and counts["409"] > 0 and counts["aborted"] > 0, counts
        async with http.get(f"{a.base}/api/v1/projects") as r:
            listed = await r.json()
        current = {p["metadata"]["name"]: p for p in listed["items"]}
        reference = watchers[1].events
        for w in watchers:
            revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in w.events]
            # Only Projects are written and revisions are dense: every one, once, in order.
            assert revisions == list(range(start + 1, final[0] + 1)), w.label
            state: dict[str, Any] = {}
            for e in w.events:
                if e["type"] == "DELETED":
                    state.pop(e["object"]["metadata"]["name"], None)
                else:
                    state[e["object"]["metadata"]["name"]] = e["object"]
            assert state == current, w.label
            # Full equality across watchers and replicas: the same events, object for object.
            assert w.events == reference, f"{w.label} differs from {watchers[1].label}"
        assert all(w.streams >= 2 for w in watchers if w.label.endswith("0"))  # resumed
