"""The store against real failover components: a promoted standby, PgBouncer in front.

- through PgBouncer in transaction mode every write succeeds (no prepared statements);
- with a multi-host DSN the pool and the listener follow the promotion; requests in between
  fail only with Unavailable (503), nothing commits twice;
- a promotion that keeps every commit keeps every watch going, gapless;
- a promotion that loses commits (asynchronous replication) ends every open watch with
  Expired (the 410 ERROR event on the wire), so informers relist — never silence.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
import pytest
from ha_components import PgBouncer, PgPair

from caravanserai.api.problems import AlreadyExists, Expired, Unavailable
from caravanserai.store.postgres import PostgresStore
from caravanserai.store.types import Obj, StoreEvent, Watch


def project(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Project",
        "metadata": {"name": name},
        "spec": {"services": [{"name": "web", "image": "nginx"}], **spec},
        "status": {"phase": "Pending"},
    }


def _create_db(pair: PgPair, name: str = "cara") -> str:
    with psycopg.connect(pair.admin_dsn(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


async def _open(dsn: str, **kwargs: Any) -> PostgresStore:
    return await PostgresStore.open(dsn, pool_min=1, pool_max=10, connect_timeout=3,
                                    query_timeout=5, poll_interval=0.2, **kwargs)


async def _retrying(make: Any, errors: list[BaseException], within: float = 60.0) -> Any:
    """Run ``make()`` until it succeeds, as a client that retries on 503; record failures."""
    async with asyncio.timeout(within):
        while True:
            try:
                return await make()
            except Unavailable as exc:
                errors.append(exc)
                await asyncio.sleep(0.1)


async def _next_events(w: Watch, n: int, within: float = 20.0) -> list[StoreEvent]:
    out: list[StoreEvent] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            ev = await w.next(timeout=within)
            if ev is not None:
                out.append(ev)
    return out


async def test_pool_through_pgbouncer_in_transaction_mode(
    pg_pair: PgPair, pgbouncer: PgBouncer
) -> None:
    """The issue measured 94 of 200 creates failing with "prepared statement _pg3_0 does not
    exist": psycopg prepares after 5 executions, transaction pooling cannot carry that."""
    db = _create_db(pg_pair)
    store = await _open(pgbouncer.dsn(db), listen_dsn=pg_pair.admin_dsn(db))
    try:
        sem = asyncio.Semaphore(20)

        async def one(i: int) -> None:
            async with sem:
                await store.create(project(f"p{i}"))
                for j in range(3):
                    def bump(obj: Obj, j: int = j) -> Obj:
                        obj["metadata"].setdefault("labels", {})["n"] = str(j)
                        return obj
                    await store.update("Project", f"p{i}", bump)

        w = store.watch("Project", 0)
        await asyncio.gather(*(one(i) for i in range(200)))
        listed = await store.list("Project")
        assert len(listed.items) == 200
        events = await _next_events(w, 800)
        revisions = [e.revision for e in events]
        assert revisions == sorted(set(revisions)) and len(revisions) == 800
        await w.aclose()
    finally:
        await store.close()


@pytest.mark.parametrize("url_form", [False, True], ids=["keyword-dsn", "url-dsn"])
async def test_multi_host_dsn_follows_promotion_without_loss(
    pg_pair: PgPair, url_form: bool
) -> None:
    """Every commit reached the standby: the promotion is invisible to watchers (no gap, no
    Expired); requests during it fail only with 503 and succeed when retried."""
    db = _create_db(pg_pair)
    store = await _open(pg_pair.multi_host_dsn(db, url=url_form))
    try:
        for i in range(5):
            await store.create(project(f"before-{i}"))
        w = store.watch("Project", 0)
        first = await _next_events(w, 5)
        pg_pair.wait_replayed()
        await asyncio.to_thread(pg_pair.fail_over)

        errors: list[BaseException] = []
        for i in range(5):
            # AlreadyExists: the attempt that got a 503 had committed (created exactly once).
            with contextlib.suppress(AlreadyExists):
                await _retrying(lambda i=i: store.create(project(f"after-{i}")), errors)
        rest = await _next_events(w, 5, within=60)
        revisions = [e.revision for e in first + rest]
        assert revisions == list(range(1, 11)), "gapless, in order, no duplicates"
        assert [e.name for e in rest] == [f"after-{i}" for i in range(5)]
        assert store.failover_resets == 0
        assert all(isinstance(e, Unavailable) for e in errors)
        listed = await store.list("Project")
        assert len(listed.items) == 10
        await w.aclose()
    finally:
        await store.close()


async def test_lost_commits_end_every_watch_with_expired(pg_pair: PgPair) -> None:
    """Asynchronous replication lost the last commits: the new primary's revision is below
    what watchers hold. Every open watch ends with Expired (410) instead of going silent,
    and a relist from the new primary plus a watch from its revision sees new writes."""
    db = _create_db(pg_pair)
    store = await _open(pg_pair.multi_host_dsn(db))
    try:
        for i in range(5):
            await store.create(project(f"kept-{i}"))
        pg_pair.wait_replayed()
        await asyncio.to_thread(pg_pair.stop_standby)  # from here on nothing replicates
        for i in range(3):
            await store.create(project(f"lost-{i}"))
        watches = [store.watch("Project", 0), store.watch(None, 6)]
        for w in watches:
            assert (await _next_events(w, 8 if w is watches[0] else 2))[-1].revision == 8

        await asyncio.to_thread(pg_pair.kill_primary)
        await asyncio.to_thread(pg_pair.start_standby)
        await asyncio.to_thread(pg_pair.promote)

        for w in watches:
            with pytest.raises(Expired):
                async with asyncio.timeout(60):
                    while True:
                        await w.next(timeout=60)
        assert store.failover_resets == 1

        errors: list[BaseException] = []
        listed = await _retrying(lambda: store.list("Project"), errors)
        assert sorted(o["metadata"]["name"] for o in listed.items) == [
            f"kept-{i}" for i in range(5)
        ]
        assert listed.revision == 5
        fresh = store.watch("Project", listed.revision)
        await _retrying(lambda: store.create(project("new")), errors)
        (ev,) = await _next_events(fresh, 1)
        assert (ev.name, ev.revision) == ("new", 6)
        assert all(isinstance(e, Unavailable) for e in errors)
        await fresh.aclose()
    finally:
        await store.close()
