"""Leader election on PostgreSQL with a lease row (client-go's ``leaderelection``).

Several ``cara-server`` replicas share one database; one of them runs the controllers::

    elector = LeaderElector(database_url, name="controller-manager",
                            on_started_leading=run_controllers)
    await elector.run()      # campaigns, leads, steps down, campaigns again ... until cancelled

How it works. A row of ``cara_leases`` (created idempotently on first use) holds
``holder`` and ``renewed_at``. One ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` statement
both acquires and renews: it succeeds when the row is ours, free, or expired
(``renewed_at + lease_seconds < now()`` on the *database's* clock, so replicas' clocks
never disagree). The leader renews every ``retry_period``; if it could not renew for
``renew_deadline`` (measured locally from the start of the last successful attempt) it
stops leading — before anyone else may take over, since ``renew_deadline <
lease_duration``. A leader that dies without releasing is replaced within
``lease_duration + retry_period``; one that stops cleanly releases the lease and is
replaced within ``retry_period``.

Why a lease row and not a session advisory lock: a session lock is released only when
PostgreSQL notices the session is gone, which after a network partition or a frozen host
can take as long as TCP keepalive (hours by default), and the partitioned holder cannot
tell that it lost the lock. A lease has a bounded takeover time and a self-fencing leader,
and the table shows who leads (``SELECT * FROM cara_leases``). The table is created with
``CREATE TABLE IF NOT EXISTS`` under a transaction-level advisory lock, so concurrent
first starts do not race; ``schema.sql`` needs no change.

This module is the informer package's only use of PostgreSQL (psycopg, async).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import psycopg
import structlog
from prometheus_client import Gauge

__all__ = ["LeaderElector", "ensure_lease_table"]

log = structlog.get_logger("caravanserai.leader")

IS_LEADER = Gauge("caravanserai_leader_is_leader", "1 while this process leads", ["lease"])

_CREATE = """
CREATE TABLE IF NOT EXISTS cara_leases (
    name          text PRIMARY KEY,
    holder        text,
    acquired_at   timestamptz,
    renewed_at    timestamptz NOT NULL DEFAULT now(),
    lease_seconds double precision NOT NULL,
    transitions   bigint NOT NULL DEFAULT 0
)
"""

_ACQUIRE = """
INSERT INTO cara_leases AS l (name, holder, acquired_at, renewed_at, lease_seconds, transitions)
VALUES (%(name)s, %(holder)s, now(), now(), %(lease)s, 0)
ON CONFLICT (name) DO UPDATE SET
    holder = EXCLUDED.holder,
    acquired_at = CASE WHEN l.holder IS NOT DISTINCT FROM EXCLUDED.holder
                       THEN l.acquired_at ELSE now() END,
    renewed_at = now(),
    lease_seconds = EXCLUDED.lease_seconds,
    transitions = l.transitions + CASE WHEN l.holder IS NOT DISTINCT FROM EXCLUDED.holder
                                       THEN 0 ELSE 1 END
WHERE l.holder = EXCLUDED.holder
   OR l.holder IS NULL
   OR l.renewed_at + l.lease_seconds * interval '1 second' < now()
RETURNING holder
"""

_CURRENT = "SELECT holder FROM cara_leases WHERE name = %(name)s"

_RELEASE = """
UPDATE cara_leases SET holder = NULL, renewed_at = now()
WHERE name = %(name)s AND holder = %(holder)s
"""

_LOCK_KEY = 0x63617261  # "cara": serialises the CREATE TABLE of concurrent first starts


async def ensure_lease_table(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create ``cara_leases`` if it does not exist (safe to run concurrently)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute(_CREATE)


def default_identity() -> str:
    """``hostname-pid-random``: unique per process."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LeaderElector:
    """Campaign for a named lease; run ``on_started_leading`` while holding it.

    Args:
        conninfo: PostgreSQL connection string (``DATABASE_URL``).
        on_started_leading: coroutine function run while leading; it is cancelled when
            leadership is lost. If it returns, the lease is released and ``run()``
            returns; if it raises, the lease is released and the campaign resumes.
        on_stopped_leading: called (sync or async) each time leadership ends.
        on_new_leader: called with the holder's identity whenever a different holder is
            observed (including this process).
        name: the lease name; electors with the same name compete.
        identity: this candidate's unique identity (default host-pid-random).
        lease_duration: seconds a lease lasts without renewal (others wait this long).
        renew_deadline: seconds the leader keeps trying to renew before stepping down.
        retry_period: seconds between attempts to acquire or renew.
        release_on_cancel: release the lease when cancelled (fast hand-over).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        on_started_leading: Callable[[], Coroutine[Any, Any, None]],
        on_stopped_leading: Callable[[], Awaitable[None] | None] | None = None,
        on_new_leader: Callable[[str], Awaitable[None] | None] | None = None,
        name: str = "controller-manager",
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_on_cancel: bool = True,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.conninfo = conninfo
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._table_ready = False
        self._leading = False
        self._last_renew = 0.0
        self.leader: str | None = None
        """The last observed holder's identity (None while unknown or free)."""
        self._log = log.bind(lease=name, identity=self.identity)
        self._gauge = IS_LEADER.labels(name)

    @property
    def is_leader(self) -> bool:
        """True while this process holds the lease and runs ``on_started_leading``."""
        return self._leading

    async def run(self) -> None:
        """Campaign and lead until cancelled (or until ``on_started_leading`` returns)."""
        try:
            while True:
                await self._acquire()
                if await self._lead():
                    return
                await asyncio.sleep(self.retry_period)
        finally:
            await self._close()

    # -- campaign -------------------------------------------------------------------------

    async def _acquire(self) -> None:
        self._log.info("campaigning for leadership")
        while True:
            try:
                async with asyncio.timeout(self.retry_period * 2):
                    if await self._try_acquire_or_renew():
                        self._last_renew = asyncio.get_running_loop().time()
                        return
            except (TimeoutError, OSError, psycopg.Error) as exc:
                self._log.warning("lease attempt failed", error=str(exc) or type(exc).__name__)
                await self._reset_connection()
            await asyncio.sleep(self.retry_period)

    async def _lead(self) -> bool:
        """Lead until leadership is lost (False) or the work returned (True)."""
        self._leading = True
        self._gauge.set(1)
        self._log.info("started leading")
        work: asyncio.Task[None] = asyncio.create_task(
            self._on_started(), name=f"leader-{self.name}"
        )
        released = False
        try:
            while True:
                await asyncio.wait({work}, timeout=self.retry_period)
                if work.done():
                    exc = None if work.cancelled() else work.exception()
                    if exc is not None:
                        self._log.error("leader work failed", error=str(exc), exc_info=exc)
                    await self._release()
                    released = True
                    return exc is None and not work.cancelled()
                if not await self._renew():
                    self._log.warning(
                        "lost leadership: could not renew in time",
                        renew_deadline=self.renew_deadline,
                    )
                    return False
        except asyncio.CancelledError:
            if self.release_on_cancel and not released:
                await self._stop_work(work)
                await self._release()
            raise
        finally:
            await self._stop_work(work)
            self._leading = False
            self._gauge.set(0)
            self._log.info("stopped leading")
            if self._on_stopped is not None:
                try:
                    result = self._on_stopped()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self._log.exception("on_stopped_leading failed")

    async def _stop_work(self, work: asyncio.Task[None]) -> None:
        if not work.done():
            work.cancel()
            await asyncio.wait({work})

    async def _renew(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = self._last_renew + self.renew_deadline
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            started = loop.time()
            try:
                async with asyncio.timeout(remaining):
                    ok = await self._try_acquire_or_renew()
            except TimeoutError:
                await self._reset_connection()
                return False
            except (OSError, psycopg.Error) as exc:
                self._log.warning("lease renewal failed", error=str(exc) or type(exc).__name__)
                await self._reset_connection()
                await asyncio.sleep(min(self.retry_period, max(0.0, deadline - loop.time())))
                continue
            if ok:
                self._last_renew = started
                return True
            return False  # someone else holds it: our lease had expired

    # -- SQL ------------------------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=max(1, int(self.retry_period * 2)),
                application_name=f"cara-leader-{self.name}"[:63],
                # Safe behind a transaction-mode pooler (PgBouncer): no prepared statements.
                prepare_threshold=None,
            )
        if not self._table_ready:
            await ensure_lease_table(self._conn)
            self._table_ready = True
        return self._conn

    async def _try_acquire_or_renew(self) -> bool:
        conn = await self._connection()
        params = {"name": self.name, "holder": self.identity, "lease": self.lease_duration}
        cur = await conn.execute(_ACQUIRE, params)
        row = await cur.fetchone()
        if row is not None:
            await self._observe(self.identity)
            return True
        cur = await conn.execute(_CURRENT, params)
        current = await cur.fetchone()
        await self._observe(current[0] if current else None)
        return False

    async def _observe(self, holder: str | None) -> None:
        if holder == self.leader:
            return
        self.leader = holder
        if holder is not None:
            self._log.info("leader observed", leader=holder)
            if self._on_new_leader is not None:
                try:
                    result = self._on_new_leader(holder)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self._log.exception("on_new_leader failed")

    async def _release(self) -> None:
        """Give the lease up so another candidate takes over at its next attempt."""
        try:
            async with asyncio.timeout(self.retry_period):
                conn = await self._connection()
                await conn.execute(_RELEASE, {"name": self.name, "holder": self.identity})
            self._log.info("released the lease")
        except (TimeoutError, OSError, psycopg.Error) as exc:
            self._log.warning("could not release the lease", error=str(exc))

    async def _reset_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                async with asyncio.timeout(1.0):
                    await conn.close()
            except (TimeoutError, OSError, psycopg.Error):
                pass

    async def _close(self) -> None:
        await self._reset_connection()
