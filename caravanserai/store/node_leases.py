"""Node heartbeats in PostgreSQL (``cara_node_leases``): the node lease of KEP-589.

A heartbeat that changes nothing in the Node is one statement here — no transaction of
its own, no revision, no event — instead of a read-modify-write of the Node that every
Node watcher would receive (see schema.sql and :mod:`caravanserai.registry.nodes`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Protocol

import orjson

from caravanserai.api.problems import NotFound
from caravanserai.store.postgres import PostgresStore
from caravanserai.store.types import Obj

# Renewed only while the Node exists (the INSERT selects from it), in the same statement
# that reads the Node's status, so a heartbeat costs one round trip.
_RENEW = b"""
WITH node AS (
    SELECT object->'status' AS status FROM cara_objects WHERE kind = 'Node' AND name = %(name)s
), renewed AS (
    INSERT INTO cara_node_leases (name, renewed_at) SELECT %(name)s, %(now)s FROM node
    ON CONFLICT (name) DO UPDATE SET renewed_at = EXCLUDED.renewed_at
    RETURNING renewed_at
)
SELECT node.status::text, (SELECT count(*) FROM renewed) FROM node
"""
_STATUS = b"""
SELECT (object->'status')::text FROM cara_objects WHERE kind = 'Node' AND name = %(name)s
"""


class NodeLeases(Protocol):
    """What the node registry needs of the heartbeat store."""

    async def renew(self, name: str, now: datetime, *, write: bool = True) -> Obj: ...
    async def renewed_at(self, name: str) -> datetime | None: ...
    async def forget(self, name: str) -> None: ...


class NodeLeaseStore:
    """The ``cara_node_leases`` table over a :class:`PostgresStore`'s connection pool."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def _rows(self, sql: bytes, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self._store.connection() as conn, asyncio.timeout(self._store.query_timeout):
            cur = await conn.execute(sql, params)
            return await cur.fetchall() if cur.description else []

    async def renew(self, name: str, now: datetime, *, write: bool = True) -> Obj:
        """Record a heartbeat of node ``name`` at ``now``; the Node's stored status.

        NotFound when there is no such Node (nothing is recorded then). ``write=False``
        only reads the status (a dry run)."""
        rows = await self._rows(_RENEW if write else _STATUS, {"name": name, "now": now})
        if not rows:
            raise NotFound(f'node "{name}" not found')
        raw = rows[0][0]
        status = orjson.loads(raw) if raw else {}
        return status if isinstance(status, dict) else {}

    async def renewed_at(self, name: str) -> datetime | None:
        """When node ``name`` last heartbeated (None: never, or no such node)."""
        rows = await self._rows(
            b"SELECT renewed_at FROM cara_node_leases WHERE name = %(name)s", {"name": name}
        )
        return rows[0][0] if rows else None

    async def forget(self, name: str) -> None:
        """Drop the record of a deleted node."""
        await self._rows(b"DELETE FROM cara_node_leases WHERE name = %(name)s", {"name": name})
