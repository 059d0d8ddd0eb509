"""The watch hub: one LISTEN connection per process, fanning the event log out to watchers.

How an event reaches a watcher:

1. A write commits its row in ``cara_events`` and ``NOTIFY cara_events, '<revision>'``.
2. The hub, LISTENing on one dedicated autocommit connection (never from the pool: a
   pooled connection is handed to others and its notifications go with it), wakes up and
   reads ``cara_events WHERE revision > head ORDER BY revision`` in batches. It also reads
   every ``poll_interval`` without a notification, since NOTIFY is only a wake-up: one can
   be lost while the connection is down, and the log is the truth.
3. It appends what it read to an in-memory ring and wakes every watcher. Each watcher
   scans the ring from its own cursor, so hundreds of watchers cost no extra queries. A
   watcher whose cursor is older than the ring (it started from an old revision, or fell
   far behind) pages through the log itself until it reaches the ring.

Because revisions are assigned in commit order (see ``postgres.py``), "every revision
<= head is committed and was read" holds whenever the hub has read the log up to ``head``;
reading ``revision > head`` therefore never skips a write that commits later.

A lost connection (``pg_terminate_backend``, server restart) is re-established with
jittered exponential backoff; the hub then simply reads the log after ``head`` again, so
watchers see nothing lost and nothing twice.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from caravanserai.api.problems import CaravanseraiError, Expired, Unavailable
from caravanserai.api.selectors import Selector
from caravanserai.api.watch import EventType
from caravanserai.store.types import StoreEvent

log = structlog.get_logger(__name__)

CHANNEL = "cara_events"
HUB_APPLICATION_NAME = "cara-watch-hub"

_EVENT_COLUMNS = "revision, kind, name, type, object, old_object"


@contextlib.contextmanager
def db_errors() -> Iterator[None]:
    """Connection trouble and timeouts become 503 Unavailable; our own errors pass through."""
    try:
        yield
    except CaravanseraiError:
        raise
    except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction, PoolTimeout,
            TimeoutError) as exc:
        raise Unavailable(f"database unavailable: {str(exc).strip() or 'timeout'}") from exc


def _event(row: tuple[Any, ...]) -> StoreEvent:
    return StoreEvent(
        revision=row[0], kind=row[1], name=row[2], type=EventType(row[3]),
        object=row[4], old_object=row[5],
    )


def filter_event(ev: StoreEvent, kind: str | None, selector: Selector | None) -> StoreEvent | None:
    """What a watcher with this kind/selector sees of an event (None: nothing).

    With a selector, an object that starts matching arrives as ADDED and one that stops
    matching as DELETED (carrying its new, no longer matching state), as in Kubernetes.
    """
    if kind is not None and ev.kind != kind:
        return None
    if selector is None or selector.empty:
        return ev
    if ev.type is EventType.DELETED:
        return ev if selector.matches(ev.object) else None
    now = selector.matches(ev.object)
    before = ev.old_object is not None and selector.matches(ev.old_object)
    if now and before:
        return ev
    if now:
        return ev if ev.type is EventType.ADDED else replace(ev, type=EventType.ADDED)
    if before:
        return replace(ev, type=EventType.DELETED)
    return None


class WatchHub:
    """Reads the event log after each notification and serves it to every watcher."""

    def __init__(
        self,
        dsn: str,
        pool: AsyncConnectionPool[Any],
        *,
        ring_size: int = 20_000,
        poll_interval: float = 1.0,
        batch_size: int = 1_000,
        connect_timeout: float = 10.0,
        query_timeout: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._pool = pool
        self._ring_size = ring_size
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        # The ring: events with floor < revision <= head, in revision order (parallel lists
        # so a watcher can bisect on revisions).
        self._revs: list[int] = []
        self._events: list[StoreEvent] = []
        self._floor = 0
        self._head = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self._connects = 0
        self._listeners: list[Callable[[list[StoreEvent]], None]] = []
        self._pool_checks: set[asyncio.Task[None]] = set()
        # Failover (see store/failover.py): a check run on every reconnect of the listener,
        # and an epoch that ends every open watch when the history they follow is gone.
        self._reconnect_check: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None
        self._reconnect_check = None
        self._epoch = 0

    def add_listener(self, callback: Callable[[list[StoreEvent]], None]) -> None:
        """Call ``callback(batch)`` (synchronously, must be quick) for each batch read."""
        self._listeners.append(callback)

    def set_reconnect_check(
        self, check: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]
    ) -> None:
        """Run ``check(conn)`` on each new listener connection, after LISTEN and before
        the log is read from it (the store's failover guard)."""
        self._reconnect_check = check

    def reset_after_failover(self, head: int) -> None:
        """The database lost revisions this hub already served (an asynchronous standby
        was promoted): forget them, continue from the new primary's ``head``, and end every
        open watch with Expired (410) so its client relists."""
        log.warning("watch_hub.reset_after_failover", old_head=self._head, head=head)
        self._revs.clear()
        self._events.clear()
        self._floor = self._head = head
        self._epoch += 1
        self._wake()

    @property
    def head(self) -> int:
        """Every revision up to this one is committed and has been read by the hub."""
        return self._head

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def listener_pid(self) -> int | None:
        """The backend pid of the LISTEN connection (for tests and diagnostics)."""
        return self._conn.info.backend_pid if self._conn is not None else None

    async def start(self) -> None:
        """Connect once (raising if PostgreSQL is unreachable), then run in the background."""
        await self._connect()
        self._task = asyncio.create_task(self._run(), name="cara-watch-hub")

    async def close(self) -> None:
        """Stop the hub; open watches end (``next()`` raises Unavailable)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._pool_checks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()
        self._wake()

    def watch(
        self, kind: str | None, after_revision: int, selector: Selector | None = None
    ) -> HubWatch:
        """A watch from ``after_revision`` (events with a greater revision, in order)."""
        return HubWatch(self, kind, after_revision, selector)

    # -- the background loop -------------------------------------------------------------

    async def _connect(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(1, int(self._connect_timeout)),
            application_name=HUB_APPLICATION_NAME,
            # Find a silently dead peer (network cut) without waiting for the OS defaults.
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
        )
        try:
            async with asyncio.timeout(self._query_timeout):
                # LISTEN before reading the head: a commit in between is then either below
                # the head we read or notified to us, never neither.
                await conn.execute(f"LISTEN {CHANNEL}".encode())
                if self._connects == 0:
                    cur = await conn.execute(b"SELECT rev FROM cara_revision")
                    row = await cur.fetchone()
                    self._head = self._floor = int(row[0]) if row else 0
                elif self._reconnect_check is not None:
                    await self._reconnect_check(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._connects += 1

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                if self._conn is None:
                    await self._connect()
                    log.info("watch_hub.reconnected", head=self._head, pid=self.listener_pid)
                    backoff = 0.1
                    # Whatever cut us off (a server restart, a network break) probably cut
                    # the pooled connections too: drop the dead ones now rather than
                    # failing one request for each of them.
                    self._check_pool_soon()
                assert self._conn is not None
                await self._catch_up(self._conn)
                await self._wait_for_news(self._conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, psycopg.Error | OSError | TimeoutError):
                    log.warning("watch_hub.disconnected", error=str(exc).strip(),
                                retry_in=round(backoff, 2))
                else:  # a bug: keep serving rather than silently stopping every watch
                    log.exception("watch_hub.error")
                await self._disconnect()
                # Full jitter keeps many processes from reconnecting in lockstep.
                await asyncio.sleep(random.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, 5.0)

    def _check_pool_soon(self) -> None:
        async def check() -> None:
            try:
                await self._pool.check()
            except Exception:
                log.warning("watch_hub.pool_check_failed", exc_info=True)

        task = asyncio.create_task(check(), name="cara-pool-check")
        self._pool_checks.add(task)
        task.add_done_callback(self._pool_checks.discard)

    async def _wait_for_news(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Return when a revision above ``head`` was notified, or the poll interval passed.

        Notifications for revisions already read (they queue up while a read runs) are
        dropped here, which saves a query per write under load.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._poll_interval
        while (remaining := deadline - loop.time()) > 0:
            newest = 0
            async for n in conn.notifies(timeout=remaining, stop_after=1):
                # The payload is the revision; anything else still means "look".
                newest = max(newest, int(n.payload) if n.payload.isdigit() else 1 << 62)
            if newest > self._head:
                return

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Read the log after ``head`` until empty, appending to the ring."""
        while True:
            async with asyncio.timeout(self._query_timeout):
                cur = await conn.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM cara_events WHERE revision > %s "
                    "ORDER BY revision LIMIT %s".encode(),
                    (self._head, self._batch_size),
                )
                rows = await cur.fetchall()
                if rows and rows[0][0] != self._head + 1:
                    await self._check_gap(conn, rows[0][0])
            if not rows:
                return
            self._append([_event(r) for r in rows])
            if len(rows) < self._batch_size:
                return

    async def _check_gap(self, conn: psycopg.AsyncConnection[Any], first: int) -> None:
        # Revisions are dense, so a gap means compaction removed events we never read
        # (the hub was disconnected for longer than the retention). Watchers that still
        # need them get Expired (they read the log, see the compaction, and raise).
        cur = await conn.execute(b"SELECT revision FROM cara_compaction")
        row = await cur.fetchone()
        compacted = int(row[0]) if row else 0
        if compacted > self._head:
            log.warning("watch_hub.compacted_while_behind", head=self._head, compacted=compacted)
            self._revs.clear()
            self._events.clear()
            self._floor = self._head = compacted
        else:
            log.warning("watch_hub.revision_gap", head=self._head, next=first)

    def _append(self, events: list[StoreEvent]) -> None:
        self._revs.extend(e.revision for e in events)
        self._events.extend(events)
        self._head = events[-1].revision
        # Trim in chunks so appending stays amortised O(1).
        if len(self._revs) > 2 * self._ring_size:
            cut = len(self._revs) - self._ring_size
            self._floor = self._revs[cut - 1]
            del self._revs[:cut]
            del self._events[:cut]
        for callback in self._listeners:
            callback(events)
        self._wake()

    def _wake(self) -> None:
        # Broadcast: everyone waiting on the old event wakes, later waiters get a new one.
        old, self._wakeup = self._wakeup, asyncio.Event()
        old.set()

    # -- used by HubWatch -----------------------------------------------------------------

    def _from_ring(self, after: int) -> list[StoreEvent] | None:
        """Events after ``after`` up to head, or None when ``after`` is older than the ring."""
        if after < self._floor:
            return None
        i = bisect.bisect_right(self._revs, after)
        return self._events[i:]

    async def _from_log(
        self, kind: str | None, after: int, upto: int
    ) -> tuple[list[StoreEvent], int]:
        """Page the log for a watcher behind the ring: (events, revision scanned up to)."""
        limit = self._batch_size
        with db_errors():
            rows = await self._read_log(kind, after, upto, limit)
        compacted = int(rows[0][0]) if rows else 0
        if after < compacted:
            raise Expired(f"revision {after} has been compacted (oldest available: {compacted})")
        events = [_event(r[1:]) for r in rows if r[1] is not None]
        scanned = events[-1].revision if len(events) == limit else upto
        return events, scanned

    async def _read_log(
        self, kind: str | None, after: int, upto: int, limit: int
    ) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn, asyncio.timeout(self._query_timeout):
            # One statement, one snapshot: the compaction mark and the events agree.
            cur = await conn.execute(
                f"SELECT c.revision, {', '.join('e.' + c for c in _EVENT_COLUMNS.split(', '))} "
                "FROM cara_compaction c LEFT JOIN LATERAL ("
                f"  SELECT {_EVENT_COLUMNS} FROM cara_events"
                "   WHERE revision > %(after)s AND revision <= %(upto)s"
                "     AND (%(kind)s::text IS NULL OR kind = %(kind)s)"
                "   ORDER BY revision LIMIT %(limit)s"
                ") e ON true".encode(),
                {"after": after, "upto": upto, "kind": kind, "limit": limit},
            )
            return await cur.fetchall()

    async def compacted_revision(self) -> int:
        """The newest revision removed from the log (read from the database)."""
        with db_errors():
            async with self._pool.connection() as conn, asyncio.timeout(self._query_timeout):
                cur = await conn.execute(b"SELECT revision FROM cara_compaction")
                row = await cur.fetchone()
        return int(row[0]) if row else 0


class HubWatch:
    """A watch served by a :class:`WatchHub` (implements ``caravanserai.store.types.Watch``).

    Events are shared between watchers: treat ``event.object`` as read-only.
    """

    def __init__(
        self, hub: WatchHub, kind: str | None, after_revision: int, selector: Selector | None
    ) -> None:
        if after_revision < 0:
            raise ValueError("after_revision must be >= 0")
        self._hub = hub
        self._kind = kind
        self._selector = None if selector is None or selector.empty else selector
        self._scanned = after_revision  # every event up to here has been filtered
        self._served = after_revision  # the last event handed out (or the start)
        self._pending: deque[StoreEvent] = deque()
        self._epoch = hub._epoch
        self._started = False
        self._closed = False

    @property
    def revision(self) -> int:
        """The highest revision served; safe to resume from (e.g. in a BOOKMARK)."""
        return self._served if self._pending else self._scanned

    async def start(self) -> None:
        """Check the start revision against compaction (raises Expired). Idempotent."""
        if self._started:
            return
        compacted = await self._hub.compacted_revision()
        if self._scanned < compacted:
            raise Expired(
                f"revision {self._scanned} has been compacted (oldest available: {compacted})"
            )
        self._started = True

    async def next(self, timeout: float | None = None) -> StoreEvent | None:  # noqa: ASYNC109
        """The next event, or None if none arrived within ``timeout`` seconds.

        Cancellation-safe: state changes only between awaits, so a cancelled call loses
        nothing. Raises Expired if this watcher fell behind compaction, Unavailable once
        the watch or the store is closed.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        await self.start()
        while True:
            if self._epoch != self._hub._epoch:
                raise Expired("the database failed over and lost revisions this watch "
                              "followed; relist")
            if self._pending:
                ev = self._pending.popleft()
                self._served = ev.revision
                return ev
            if self._closed or self._hub.closed:
                raise Unavailable("watch closed")
            wakeup = self._hub._wakeup  # capture before checking: no lost wake-ups
            head = self._hub.head
            if self._scanned < head:
                batch = self._hub._from_ring(self._scanned)
                if batch is None:
                    events, scanned = await self._hub._from_log(self._kind, self._scanned, head)
                else:
                    events, scanned = batch, head
                self._take(events, scanned)
                continue
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            try:
                async with asyncio.timeout(remaining):
                    await wakeup.wait()
            except TimeoutError:
                return None

    def _take(self, events: list[StoreEvent], scanned: int) -> None:
        for ev in events:
            if ev.revision > scanned:
                break
            if ev.revision <= self._scanned:
                continue
            if (out := filter_event(ev, self._kind, self._selector)) is not None:
                self._pending.append(out)
        self._scanned = max(self._scanned, scanned)

    async def __aiter__(self) -> AsyncIterator[StoreEvent]:
        while not self._closed:
            try:
                ev = await self.next()
            except Unavailable:
                return
            if ev is not None:
                yield ev

    async def __aenter__(self) -> HubWatch:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the watch; further ``next()`` calls raise Unavailable."""
        self._closed = True
        self._pending.clear()
        self._hub._wake()  # let a concurrent next() notice (a spurious wake-up for others)
