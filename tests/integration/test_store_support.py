"""Helpers shared by the store's integration tests (a module, not a conftest, so it imports).

No tests here; pytest collects the file and finds none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from caravanserai.api.watch import EventType
from caravanserai.store.hub import HUB_APPLICATION_NAME
from caravanserai.store.postgres import PostgresStore
from caravanserai.store.types import Obj, StoreEvent, Watch

StoreFactory = Callable[..., Awaitable[PostgresStore]]


def project(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    """A minimal Project in wire form (the store does not validate; the API layer does)."""
    md: dict[str, Any] = {"name": name}
    if labels:
        md["labels"] = labels
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Project",
        "metadata": md,
        "spec": {"services": [{"name": "web", "image": "busybox"}], **spec},
    }


def node(name: str, state: str | None = None) -> Obj:
    obj: Obj = {"apiVersion": "caravanserai/v1", "kind": "Node", "metadata": {"name": name},
                "spec": {}}
    if state:
        obj["status"] = {"state": state}
    return obj


def set_status(**status: Any) -> Callable[[Obj], Obj]:
    def mutate(obj: Obj) -> Obj:
        obj.setdefault("status", {}).update(status)
        return obj

    return mutate


def replay(events: list[StoreEvent], into: dict[str, Obj] | None = None) -> dict[str, Obj]:
    """An informer's cache: apply events in order (key: kind/name)."""
    cache = {} if into is None else into
    for ev in events:
        key = f"{ev.kind}/{ev.name}"
        if ev.type is EventType.DELETED:
            cache.pop(key, None)
        else:
            cache[key] = ev.object
    return cache


def keyed(items: list[Obj]) -> dict[str, Obj]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in items}


async def collect_until(w: Watch, revision: int, within: float = 20.0) -> list[StoreEvent]:
    """Events from ``w`` until it has been served up to ``revision`` (fails on timeout)."""
    out: list[StoreEvent] = []
    async with asyncio.timeout(within):
        while w.revision < revision:
            # short waits: next() only returns early for an event, not for a revision
            # advanced by events filtered out
            ev = await w.next(timeout=0.02)
            if ev is not None:
                out.append(ev)
    return out


async def collect_n(w: Watch, n: int, within: float = 10.0) -> list[StoreEvent]:
    """Exactly ``n`` events (fails on timeout)."""
    out: list[StoreEvent] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            ev = await w.next(timeout=1.0)
            if ev is not None:
                out.append(ev)
    return out



def with_dbname(dsn: str, dbname: str) -> str:
    """The same DSN pointing at another database (URL or key=value form)."""
    if "://" in dsn:
        return urlunsplit(urlsplit(dsn)._replace(path="/" + dbname))
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


async def kill_listeners(dsn: str) -> int:
    """pg_terminate_backend every watch hub's LISTEN connection on this database."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            (HUB_APPLICATION_NAME,),
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0
