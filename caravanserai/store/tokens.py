"""API credentials in PostgreSQL (``cara_tokens``): user tokens, join tokens, node credentials.

Only digests are stored (see schema.sql); the secret exists once, in the create's answer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from caravanserai.api.problems import AlreadyExists, NotFound
from caravanserai.store.hub import TOKENS_CHANNEL
from caravanserai.store.postgres import PostgresStore

_COLUMNS = "name, role, node, created_at, expires_at"


@dataclass(frozen=True)
class TokenRecord:
    """One stored credential (never its secret)."""

    name: str
    role: str
    node: str | None
    created_at: datetime
    expires_at: datetime | None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def _record(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(row[0], row[1], row[2], row[3], row[4])


class TokenStore:
    """The ``cara_tokens`` table over a :class:`PostgresStore`'s connection pool."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def _execute(
        self, sql: str, params: tuple[Any, ...] = (), *, notify: bool = False
    ) -> list[tuple[Any, ...]]:
        """``notify``: the statement may take a credential away (revoke, replace): every
        process's token cache is told so when it commits (``NOTIFY cara_tokens``)."""
        async with self._store.connection() as conn, asyncio.timeout(self._store.query_timeout):
            if not notify:
                cur = await conn.execute(sql.encode(), params)
                return await cur.fetchall() if cur.description else []
            async with conn.transaction():
                cur = await conn.execute(sql.encode(), params)
                rows = await cur.fetchall() if cur.description else []
                await conn.execute(f"NOTIFY {TOKENS_CHANNEL}".encode())
            return rows

    async def create(
        self,
        name: str,
        role: str,
        digest: bytes,
        *,
        expires_at: datetime | None = None,
        node: str | None = None,
        agent_secret: str | None = None,
    ) -> TokenRecord:
        """Insert a credential; AlreadyExists when the name (or the node) is taken."""
        try:
            rows = await self._execute(
                "INSERT INTO cara_tokens (name, role, digest, node, agent_secret, expires_at) "
                f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (name, role, digest, node, agent_secret, expires_at),
            )
        except psycopg.errors.UniqueViolation:
            raise AlreadyExists(f'token "{name}" already exists') from None
        return _record(rows[0])

    async def replace(
        self, name: str, role: str, digest: bytes, *, node: str | None = None,
        agent_secret: str | None = None,
    ) -> TokenRecord:
        """Insert or overwrite the credential ``name`` (a node re-joining, the dev token)."""
        rows = await self._execute(
            "INSERT INTO cara_tokens (name, role, digest, node, agent_secret) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, "
            "digest = EXCLUDED.digest, node = EXCLUDED.node, agent_secret = "
            "EXCLUDED.agent_secret, created_at = now(), expires_at = NULL "
            f"RETURNING {_COLUMNS}",
            (name, role, digest, node, agent_secret),
            notify=True,
        )
        return _record(rows[0])

    async def lookup(self, digest: bytes) -> TokenRecord | None:
        """The credential with this digest (expired ones too: the caller says why it fails)."""
        rows = await self._execute(
            f"SELECT {_COLUMNS} FROM cara_tokens WHERE digest = %s", (digest,)
        )
        return _record(rows[0]) if rows else None

    async def get(self, name: str) -> TokenRecord | None:
        rows = await self._execute(f"SELECT {_COLUMNS} FROM cara_tokens WHERE name = %s", (name,))
        return _record(rows[0]) if rows else None

    async def list(self) -> list[TokenRecord]:
        rows = await self._execute(f"SELECT {_COLUMNS} FROM cara_tokens ORDER BY name")
        return [_record(r) for r in rows]

    async def count(self) -> int:
        rows = await self._execute("SELECT count(*) FROM cara_tokens")
        return int(rows[0][0])

    async def revoke(self, name: str) -> TokenRecord:
        """Delete the credential (it stops working at once); NotFound if there is none."""
        rows = await self._execute(
            f"DELETE FROM cara_tokens WHERE name = %s RETURNING {_COLUMNS}", (name,),
            notify=True,
        )
        if not rows:
            raise NotFound(f'token "{name}" not found')
        return _record(rows[0])

    async def agent_secret(self, node: str) -> str | None:
        """The secret the relay presents to ``node``'s agent (None: the node never joined)."""
        rows = await self._execute(
            "SELECT agent_secret FROM cara_tokens WHERE node = %s", (node,)
        )
        return str(rows[0][0]) if rows and rows[0][0] else None


class CachingTokenStore(TokenStore):
    """A :class:`TokenStore` that remembers successful lookups, so a request costs no query
    to authenticate (it had cost a quarter of a server's CPU under a thousand agents).

    A revocation still takes effect at once: revoke and replace clear this process's cache
    before they return, and every other process's when their ``NOTIFY cara_tokens`` reaches
    its watch hub (call :meth:`forget_cached` from :meth:`WatchHub.add_tokens_listener`,
    which also calls it after the LISTEN connection reconnects). ``ttl`` bounds what a lost
    notification could cost; an expired token is refused by its ``expires_at`` whatever the
    cache says. Unknown tokens are not cached (each one is a query, as before).
    """

    def __init__(
        self, store: PostgresStore, *, ttl: float = 60.0, max_entries: int = 10_000
    ) -> None:
        super().__init__(store)
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[bytes, tuple[TokenRecord, float]] = {}
        self._generation = 0

    def forget_cached(self) -> None:
        """Drop every remembered lookup (a credential changed somewhere)."""
        self._entries.clear()
        self._generation += 1

    async def lookup(self, digest: bytes) -> TokenRecord | None:
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        generation = self._generation
        record = await super().lookup(digest)
        # Not if a change was announced while we read: the row may predate it.
        if record is not None and generation == self._generation:
            self._entries.pop(digest, None)
            if len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]  # the oldest
            self._entries[digest] = (record, now + self._ttl)
        return record

    async def replace(
        self, name: str, role: str, digest: bytes, *, node: str | None = None,
        agent_secret: str | None = None,
    ) -> TokenRecord:
        try:
            return await super().replace(name, role, digest, node=node, agent_secret=agent_secret)
        finally:
            self.forget_cached()

    async def revoke(self, name: str) -> TokenRecord:
        try:
            return await super().revoke(name)
        finally:
            self.forget_cached()
