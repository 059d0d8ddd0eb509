"""The watch hub: one LISTEN connection per process, fanning the event log out to watchers.

How an event reaches a watcher:

1. A write commits its row in ``cara_events`` and ``NOTIFY cara_events, '<revision>'``.
2. The hub, LISTENing on one dedicated autocommit connection (never from the pool: a
   pooled connection is handed to others and its notifications go with it), wakes up and
   reads ``cara_events WHERE revision > head ORDER BY revision`` in pages. It also reads
   every ``poll_interval`` without a notification, since NOTIFY is only a wake-up: one can
   be lost while the connection is down, and the log is the truth.
3. It appends what it read to an in-memory ring (bounded by count *and* bytes) and hands
   each event to the *live* watchers it may concern. Watchers whose selector pins
   ``status.nodeRef`` or ``metadata.name`` are indexed by that value, so an event reaches
   only the watchers of its old and new value (an object moving from node A to B is seen
   by A's watcher, as DELETED, and by B's, as ADDED); the others are evaluated one by one.
   The cost of a write therefore does not grow with the number of agents.
4. A new watcher first *catches up*: it scans the ring from its start revision (or, when
   that is older than the ring, pages through the log itself), a bounded chunk at a time,
   and registers as live once it has reached the hub's head — synchronously, so no event
   can fall between the two.

Bounds (issue: memory must not grow with what clients fail to read):

* the ring keeps at most ``ring_size`` events and ``ring_bytes`` of them;
* the log is read in pages sized by bytes, not only by rows;
* every live watcher has a budget of queued bytes (its undelivered events plus whatever
  its owner reports as queued further on, e.g. a socket's send buffer). A watcher over
  budget is ended: ``next()`` raises Expired, which clients treat as "relist", as
  kube-apiserver does when it closes an unresponsive watcher;
* a watch from a revision the hub has not reached waits up to ``future_wait`` seconds for
  it and then raises TooLargeResourceVersion (after a database failover the new primary may
  be behind what a client saw), never staying silent.

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
from dataclasses import dataclass, replace
from typing import Any

import orjson
import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from caravanserai.api.problems import (
    CaravanseraiError,
    Expired,
    TooLargeResourceVersion,
    Unavailable,
)
from caravanserai.api.selectors import Selector, field_value
from caravanserai.api.watch import EventType
from caravanserai.store.pooled import pooled_connection
from caravanserai.store.types import StoreEvent

log = structlog.get_logger(__name__)

CHANNEL = "cara_events"
# Credentials changed (a token revoked or replaced): processes drop their token caches.
TOKENS_CHANNEL = "cara_tokens"
HUB_APPLICATION_NAME = "cara-watch-hub"

# Objects are read as their JSON text: its length is the size the byte bounds count, and
# orjson parses it faster than the driver's json.loads.
_EVENT_COLUMNS = "revision, kind, name, type, object::text, old_object::text"
# Field selectors whose watchers are indexed by value.
INDEXED_FIELDS = ("status.nodeRef", "metadata.name")
MiB = 1024 * 1024


@dataclass(frozen=True)
class HubLimits:
    """Memory and waiting bounds of the watch path (see the module docstring)."""

    ring_size: int = 20_000
    ring_bytes: int = 64 * MiB
    watcher_bytes: int = 16 * MiB
    page_bytes: int = 4 * MiB
    future_wait: float = 3.0
    # Under load, read the log at most once per ``read_linger`` seconds: the writes of that
    # span reach each watcher as one batch (one wake-up, one socket write), instead of one
    # read, wake-up and write per commit. A read after a quiet spell is not delayed.
    read_linger: float = 0.0


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
    obj_text: str = row[4]
    old_text: str | None = row[5]
    return StoreEvent(
        revision=row[0], kind=row[1], name=row[2], type=EventType(row[3]),
        object=orjson.loads(obj_text),
        old_object=None if old_text is None else orjson.loads(old_text),
        size=len(obj_text) + (len(old_text) if old_text is not None else 0),
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


class _PageSize:
    """Rows per page of the event log, adapted so a page holds about ``page_bytes``.

    Starts small (objects may be up to megabytes each) and grows while pages come back
    small, so neither a burst of large objects nor a long catch-up holds much at once.
    """

    def __init__(self, max_rows: int, page_bytes: int) -> None:
        self._max = max_rows
        self._bytes = page_bytes
        self.rows = min(16, max_rows)

    def observe(self, rows: int, size: int) -> None:
        if rows == 0:
            return
        per_row = max(1, size // rows)
        self.rows = max(1, min(self._max, self._bytes // per_row, 2 * max(rows, self.rows)))


class _WatcherIndex:
    """Live watchers by kind, and by the value of an indexed field where they pin one."""

    def __init__(self) -> None:
        self.plain: dict[str | None, set[HubWatch]] = {}
        self.by_value: dict[tuple[str | None, str], dict[str, set[HubWatch]]] = {}
        self.count = 0
        self.offers = 0  # (event, watcher) evaluations so far: what indexing keeps small

    def add(self, w: HubWatch) -> None:
        self.count += 1
        if w.index_key is None:
            self.plain.setdefault(w.kind, set()).add(w)
            return
        path, values = w.index_key
        table = self.by_value.setdefault((w.kind, path), {})
        for v in values:
            table.setdefault(v, set()).add(w)

    def remove(self, w: HubWatch) -> None:
        self.count -= 1
        if w.index_key is None:
            group = self.plain.get(w.kind)
            if group is not None:
                group.discard(w)
                if not group:
                    del self.plain[w.kind]
            return
        path, values = w.index_key
        table = self.by_value.get((w.kind, path))
        if table is None:
            return
        for v in values:
            group = table.get(v)
            if group is not None:
                group.discard(w)
                if not group:
                    del table[v]
        if not table:
            del self.by_value[(w.kind, path)]

    def all(self) -> list[HubWatch]:
        out = {w for group in self.plain.values() for w in group}
        for table in self.by_value.values():
            for group in table.values():
                out.update(group)
        return list(out)

    def dispatch(self, events: list[StoreEvent]) -> set[HubWatch]:
        """Offer each event to the watchers it may concern; return those given something."""
        woken: set[HubWatch] = set()
        plain, by_value = self.plain, self.by_value
        offers = 0
        if plain:
            # Each plain watcher takes its share of the batch in one call (one budget
            # check, one wake-up per batch rather than per event).
            kinds = {ev.kind for ev in events}
            for key, watchers in plain.items():
                if key is None:
                    mine = events
                elif key not in kinds:
                    continue
                else:
                    mine = events if len(kinds) == 1 else [e for e in events if e.kind == key]
                offers += len(watchers) * len(mine)
                for w in watchers:
                    if w.offer_many(mine):
                        woken.add(w)
        if not by_value:
            self.offers += offers
            return woken
        for ev in events:
            for (kind, path), table in by_value.items():
                if kind is not None and kind != ev.kind:
                    continue
                new = field_value(ev.object, path)
                group = table.get(new)
                if group:
                    offers += len(group)
                    for w in group:
                        if w.offer(ev):
                            woken.add(w)
                if ev.old_object is not None:
                    old = field_value(ev.old_object, path)
                    if old != new and (group := table.get(old)):
                        offers += len(group)
                        for w in group:
                            if w.offer(ev):
                                woken.add(w)
        self.offers += offers
        return woken


class WatchHub:
    """Reads the event log after each notification and serves it to every watcher."""

    def __init__(
        self,
        dsn: str,
        pool: AsyncConnectionPool[Any],
        *,
        ring_size: int | None = None,
        limits: HubLimits | None = None,
        poll_interval: float = 1.0,
        batch_size: int = 1_000,
        connect_timeout: float = 10.0,
        query_timeout: float = 30.0,
    ) -> None:
        self.limits = limits or HubLimits()
        if ring_size is not None:
            self.limits = replace(self.limits, ring_size=ring_size)
        self._dsn = dsn
        self._pool = pool
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._page = _PageSize(batch_size, self.limits.page_bytes)
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        # The ring: events with floor < revision <= head, in revision order (parallel lists
        # so a watcher can bisect on revisions).
        self._revs: list[int] = []
        self._events: list[StoreEvent] = []
        self._ring_bytes = 0
        self._floor = 0
        self._head = 0
        self._wakeup = asyncio.Event()  # broadcast "head moved" (see wait_for_revision)
        self._closed = False
        self._connects = 0
        self._last_read = 0.0  # loop time of the last read after a notification
        self._listeners: list[Callable[[list[StoreEvent]], None]] = []
        self._pool_checks: set[asyncio.Task[None]] = set()
        self._live = _WatcherIndex()
        self.slow_watchers_ended = 0
        """Watchers ended because they exceeded their byte budget."""
        # Failover (see store/failover.py): a check run on every reconnect of the listener,
        # and an epoch that ends every open watch when the history they follow is gone.
        self._reconnect_check: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None
        self._reconnect_check = None
        self._epoch = 0
        self._tokens_listeners: list[Callable[[], None]] = []

    def add_tokens_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (synchronously, must be quick) when a credential changed
        anywhere (``NOTIFY cara_tokens``) and after every reconnect of the LISTEN connection
        (a change may have gone unnoticed while it was down)."""
        self._tokens_listeners.append(callback)

    def _tokens_changed(self) -> None:
        for callback in self._tokens_listeners:
            callback()

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
        self._ring_bytes = 0
        self._floor = self._head = head
        self._epoch += 1
        # Watchers still catching up see the new epoch in next(); those the hub pushes to
        # wait on their own wake-up, so end each of them here.
        for w in self._live.all():
            w.expire("the database failed over and lost revisions this watch followed; "
                     "relist")
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

    @property
    def ring_bytes(self) -> int:
        """Bytes of the events held in the ring now (bounded by ``limits.ring_bytes``)."""
        return self._ring_bytes

    @property
    def ring_length(self) -> int:
        return len(self._revs)

    @property
    def live_watchers(self) -> int:
        return self._live.count

    @property
    def offers(self) -> int:
        """How many (event, watcher) pairs the hub has evaluated: with indexed watchers this
        grows with the watchers an event concerns, not with all watchers."""
        return self._live.offers

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
        for w in self._live.all():
            w.wake()
        self._wake()

    def watch(
        self,
        kind: str | None,
        after_revision: int,
        selector: Selector | None = None,
        *,
        max_queued_bytes: int | None = None,
    ) -> HubWatch:
        """A watch from ``after_revision`` (events with a greater revision, in order).

        ``max_queued_bytes`` (default ``limits.watcher_bytes``; 0: unbounded) is the
        budget of undelivered output past which the watch is ended with Expired.
        """
        budget = self.limits.watcher_bytes if max_queued_bytes is None else max_queued_bytes
        return HubWatch(self, kind, after_revision, selector, max_queued_bytes=budget)

    async def wait_for_revision(self, revision: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds for the hub to have read ``revision``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._head < revision and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            wakeup = self._wakeup
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await wakeup.wait()
        return self._head >= revision

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
                await conn.execute(f"LISTEN {TOKENS_CHANNEL}".encode())
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
        self._tokens_changed()

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
                linger = self.limits.read_linger
                if linger > 0:
                    loop = asyncio.get_running_loop()
                    # One timer per read (not per watcher), only when reads come quickly.
                    if (pause := self._last_read + linger - loop.time()) > 0:
                        await asyncio.sleep(pause)
                    self._last_read = loop.time()
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
                if n.channel == TOKENS_CHANNEL:
                    self._tokens_changed()
                    continue
                # The payload is the revision; anything else still means "look".
                newest = max(newest, int(n.payload) if n.payload.isdigit() else 1 << 62)
            if newest > self._head:
                return

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Read the log after ``head`` until empty, appending to the ring."""
        while True:
            limit = self._page.rows
            async with asyncio.timeout(self._query_timeout):
                cur = await conn.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM cara_events WHERE revision > %s "
                    "ORDER BY revision LIMIT %s".encode(),
                    (self._head, limit),
                )
                rows = await cur.fetchall()
                if rows and rows[0][0] != self._head + 1:
                    await self._check_gap(conn, rows[0][0])
            if not rows:
                return
            events = [_event(r) for r in rows]
            del rows
            self._page.observe(len(events), sum(e.size for e in events))
            self._append(events)
            if len(events) < limit:
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
            self._ring_bytes = 0
            self._floor = self._head = compacted
            # Live watchers were promised every event after their revision: they can no
            # longer have it, so they end with Expired and relist.
            for w in self._live.all():
                if w._scanned < compacted:  # it was offered everything up to there
                    w.expire(f"the watch hub fell behind compaction at revision {compacted}")
        else:
            log.warning("watch_hub.revision_gap", head=self._head, next=first)

    def _append(self, events: list[StoreEvent]) -> None:
        self._revs.extend(e.revision for e in events)
        self._events.extend(events)
        self._ring_bytes += sum(e.size for e in events)
        self._head = events[-1].revision
        self._trim()
        for callback in self._listeners:
            callback(events)
        if self._live.count:
            for w in self._live.dispatch(events):
                w.wake()
        self._wake()

    def _trim(self) -> None:
        # Trim in chunks (to 3/4 of a bound) so appending stays amortised O(1).
        limits = self.limits
        cut = 0
        if len(self._revs) > 2 * limits.ring_size:
            cut = len(self._revs) - limits.ring_size
        if self._ring_bytes > limits.ring_bytes:
            target = limits.ring_bytes * 3 // 4
            held = self._ring_bytes - sum(e.size for e in self._events[:cut])
            while cut < len(self._events) and held > target:
                held -= self._events[cut].size
                cut += 1
        if cut:
            self._floor = self._revs[cut - 1]
            self._ring_bytes -= sum(e.size for e in self._events[:cut])
            del self._revs[:cut]
            del self._events[:cut]

    def _wake(self) -> None:
        # Broadcast: everyone waiting on the old event wakes, later waiters get a new one.
        old, self._wakeup = self._wakeup, asyncio.Event()
        old.set()

    # -- used by HubWatch -----------------------------------------------------------------

    def _register(self, w: HubWatch) -> None:
        self._live.add(w)

    def _unregister(self, w: HubWatch) -> None:
        self._live.remove(w)

    def _ring_index(self, after: int) -> int | None:
        """Index of the first ring event after ``after``, None when older than the ring."""
        if after < self._floor:
            return None
        return bisect.bisect_right(self._revs, after)

    def _from_ring(self, after: int) -> list[StoreEvent] | None:
        """Events after ``after`` up to head, or None when ``after`` is older than the ring."""
        i = self._ring_index(after)
        return None if i is None else self._events[i:]

    async def _from_log(
        self, kind: str | None, after: int, upto: int, page: _PageSize | None = None
    ) -> tuple[list[StoreEvent], int]:
        """Page the log for a watcher behind the ring: (events, revision scanned up to)."""
        limit = self._batch_size if page is None else page.rows
        with db_errors():
            rows = await self._read_log(kind, after, upto, limit)
        compacted = int(rows[0][0]) if rows else 0
        if after < compacted:
            raise Expired(f"revision {after} has been compacted (oldest available: {compacted})")
        events = [_event(r[1:]) for r in rows if r[1] is not None]
        if page is not None:
            page.observe(len(events), sum(e.size for e in events))
        scanned = events[-1].revision if len(events) == limit else upto
        return events, scanned

    async def _read_log(
        self, kind: str | None, after: int, upto: int, limit: int
    ) -> list[tuple[Any, ...]]:
        async with pooled_connection(self._pool) as conn, asyncio.timeout(self._query_timeout):
            # One statement, one snapshot: the compaction mark and the events agree.
            cur = await conn.execute(
                "SELECT c.revision, e.* FROM cara_compaction c LEFT JOIN LATERAL ("
                f"  SELECT {_EVENT_COLUMNS} FROM cara_events"
                "   WHERE revision > %(after)s AND revision <= %(upto)s"
                "     AND (%(kind)s::text IS NULL OR kind = %(kind)s)"
                "   ORDER BY revision LIMIT %(limit)s"
                ") e ON true".encode(),
                {"after": after, "upto": upto, "kind": kind, "limit": limit},
            )
            return await cur.fetchall()

    async def database_revision(self) -> int:
        """The newest committed revision (read from the database, not the hub's head)."""
        with db_errors():
            async with pooled_connection(self._pool) as conn, asyncio.timeout(self._query_timeout):
                cur = await conn.execute(b"SELECT rev FROM cara_revision")
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def compacted_revision(self) -> int:
        """The newest revision removed from the log (read from the database)."""
        with db_errors():
            async with pooled_connection(self._pool) as conn, asyncio.timeout(self._query_timeout):
                cur = await conn.execute(b"SELECT revision FROM cara_compaction")
                row = await cur.fetchone()
        return int(row[0]) if row else 0


def _index_key(selector: Selector | None) -> tuple[str, frozenset[str]] | None:
    if selector is None:
        return None
    for path in INDEXED_FIELDS:
        values = selector.required_values(path)
        if values is not None:
            return path, values
    return None


class HubWatch:
    """A watch served by a :class:`WatchHub` (implements ``caravanserai.store.types.Watch``).

    Events are shared between watchers: treat ``event.object`` as read-only.
    """

    def __init__(
        self,
        hub: WatchHub,
        kind: str | None,
        after_revision: int,
        selector: Selector | None,
        *,
        max_queued_bytes: int = 0,
    ) -> None:
        if after_revision < 0:
            raise ValueError("after_revision must be >= 0")
        self._hub = hub
        self.kind = kind
        self._selector = None if selector is None or selector.empty else selector
        self.index_key = _index_key(self._selector)
        self._scanned = after_revision  # every event up to here has been filtered
        self._served = after_revision  # the last event handed out (or the start)
        self._pending: deque[StoreEvent] = deque()
        self._pending_bytes = 0
        self._budget = max_queued_bytes
        self._page = _PageSize(hub._batch_size, hub.limits.page_bytes)
        # The one task waiting in next()/next_batch() waits on this future; the hub resolves
        # it (wake) once per batch. A single timer, re-armed only when a wait needs an
        # earlier deadline, bounds the wait: no timer handle per event or per call.
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._live = False
        self._ended: str | None = None  # why the hub ended this watch (raised as Expired)
        self._epoch = hub._epoch
        self._started = False
        self._closed = False
        self._queued_elsewhere: Callable[[], int] | None = None
        self._on_ended: Callable[[], None] | None = None

    @property
    def revision(self) -> int:
        """The highest revision served; safe to resume from (e.g. in a BOOKMARK)."""
        if self._pending:
            return self._served
        # A live watcher has been offered everything up to the hub's head.
        return max(self._scanned, self._hub.head) if self._live else self._scanned

    @property
    def queued_bytes(self) -> int:
        """Bytes of events waiting to be taken with ``next()``."""
        return self._pending_bytes

    def set_output(
        self, queued_bytes: Callable[[], int], on_ended: Callable[[], None]
    ) -> None:
        """Count ``queued_bytes()`` (output already taken but not yet delivered, such as a
        socket's send buffer) against the budget, and call ``on_ended()`` when the hub ends
        this watch (too slow, or behind compaction) so a writer blocked on that output can
        stop waiting."""
        self._queued_elsewhere = queued_bytes
        self._on_ended = on_ended

    async def start(self) -> None:
        """Check the start revision: Expired if compacted, TooLargeResourceVersion if the hub
        has not reached it within ``limits.future_wait`` seconds. Idempotent."""
        if self._started:
            return
        compacted = await self._hub.compacted_revision()
        if self._scanned < compacted:
            raise Expired(
                f"revision {self._scanned} has been compacted (oldest available: {compacted})"
            )
        hub = self._hub
        if (
            self._scanned > hub.head
            # The hub may lag the database (its log compacted away): only a revision the
            # database has not reached either is "too large".
            and await hub.database_revision() < self._scanned
            and not await hub.wait_for_revision(self._scanned, hub.limits.future_wait)
        ):
            raise TooLargeResourceVersion(
                f"resourceVersion {self._scanned} is ahead of this server "
                f"(latest: {self._hub.head}); retry, or relist if it persists"
            )
        self._started = True

    async def next(self, timeout: float | None = None) -> StoreEvent | None:  # noqa: ASYNC109
        """The next event, or None if none arrived within ``timeout`` seconds.

        Cancellation-safe: state changes only between awaits, so a cancelled call loses
        nothing. Raises Expired if this watcher fell behind compaction or over its byte
        budget, Unavailable once the watch or the store is closed.
        """
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        batch = await self.next_batch(deadline, max_events=1)
        return batch[0] if batch else None

    async def next_batch(
        self,
        deadline: float | None = None,
        *,
        max_events: int = 256,
        max_bytes: int = MiB,
    ) -> list[StoreEvent]:
        """Every event available now (at least one; at most ``max_events`` and about
        ``max_bytes``), waiting for the first until the event loop's clock reaches
        ``deadline`` (None: no limit); ``[]`` when it passed with nothing to take.

        A stream draining a watcher calls this once per wake-up and writes the batch in
        one go. Cancellation-safe and raising like :meth:`next`.
        """
        loop = asyncio.get_running_loop()
        await self.start()
        hub = self._hub
        while True:
            if self._epoch != hub._epoch:
                raise Expired("the database failed over and lost revisions this watch "
                              "followed; relist")
            if self._pending:
                return self._pop(max_events, max_bytes)
            if self._ended is not None:
                raise Expired(self._ended)
            if self._closed or hub.closed:
                raise Unavailable("watch closed")
            if not self._live:
                head = hub.head
                if self._scanned < head:
                    i = hub._ring_index(self._scanned)
                    if i is None:
                        events, scanned = await hub._from_log(
                            self.kind, self._scanned, head, self._page
                        )
                        self._take(events, 0, scanned)
                    else:
                        self._take(hub._events, i, head)
                    continue
                # Caught up: from now on the hub hands us each event as it reads it. No
                # await since reading the head, so nothing can slip in between.
                hub._register(self)
                self._live = True
                continue
            if deadline is not None:
                if loop.time() >= deadline:
                    return []
                self._arm(loop, deadline)
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                # A cancelled call may finish after its successor started waiting: leave
                # the successor's future in place.
                if self._waiter is waiter:
                    self._waiter = None

    def _pop(self, max_events: int, max_bytes: int) -> list[StoreEvent]:
        pending = self._pending
        if len(pending) <= max_events and self._pending_bytes <= max_bytes:
            out = list(pending)
            pending.clear()
            self._pending_bytes = 0
        else:
            out = []
            size = 0
            while pending and len(out) < max_events and (not out or size < max_bytes):
                ev = pending.popleft()
                size += ev.size
                out.append(ev)
            self._pending_bytes -= size
        self._served = out[-1].revision
        return out

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Make sure a wake-up comes by ``deadline``: keep the timer when it fires no later
        (the waiter then re-checks the time and re-arms), replace it only when it is later."""
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.wake()

    def _take(self, events: list[StoreEvent], start: int, scanned: int) -> None:
        """Filter ``events[start:]`` (up to ``scanned``) into pending, a bounded chunk."""
        for j in range(start, len(events)):
            ev = events[j]
            if ev.revision > scanned:
                break
            if ev.revision <= self._scanned:
                continue
            self._scanned = ev.revision
            if (out := filter_event(ev, self.kind, self._selector)) is not None:
                self._pending.append(out)
                self._pending_bytes += out.size
                if self._pending_bytes >= self._hub.limits.page_bytes:
                    return  # the rest on the next call: a catch-up holds one chunk at a time
        self._scanned = max(self._scanned, scanned)

    # -- called by the hub (synchronously, from its reading task) ---------------------------

    def offer(self, ev: StoreEvent) -> bool:
        """Queue ``ev`` if this watcher sees it; True when something was queued."""
        if ev.revision <= self._scanned or self._ended is not None:
            return False  # offered twice (old and new indexed value) or already ended
        self._scanned = ev.revision
        out = filter_event(ev, self.kind, self._selector)
        if out is None:
            return False
        self._pending.append(out)
        self._pending_bytes += out.size
        if self._budget:
            self._check_budget(ev.revision)
        return True

    def offer_many(self, events: list[StoreEvent]) -> bool:
        """``offer`` for a batch, in revision order; True when something was queued."""
        if self._ended is not None:
            return False
        scanned = self._scanned
        if events[-1].revision <= scanned:
            return False
        kind, selector, pending = self.kind, self._selector, self._pending
        queued = len(pending)
        size = 0
        for ev in events:
            if ev.revision <= scanned:
                continue
            scanned = ev.revision
            if selector is None:
                if kind is not None and ev.kind != kind:
                    continue
                pending.append(ev)
                size += ev.size
            elif (out := filter_event(ev, kind, selector)) is not None:
                pending.append(out)
                size += out.size
        self._scanned = scanned
        if len(pending) == queued:
            return False
        self._pending_bytes += size
        if self._budget:
            self._check_budget(scanned)
        return True

    def _check_budget(self, revision: int) -> None:
        queued = self._pending_bytes
        if self._queued_elsewhere is not None:
            queued += self._queued_elsewhere()
        if queued > self._budget:
            self._hub.slow_watchers_ended += 1
            log.warning("watch_hub.slow_watcher_ended", kind=self.kind,
                        queued_bytes=queued, budget=self._budget, revision=revision)
            self.expire(
                f"the watch fell too far behind ({queued} bytes queued, limit "
                f"{self._budget}); relist and watch again"
            )

    def expire(self, reason: str) -> None:
        """End this watch: the next ``next()`` raises Expired(reason)."""
        if self._ended is not None:
            return
        self._ended = reason
        self._pending.clear()
        self._pending_bytes = 0
        self.wake()
        if self._on_ended is not None:
            self._on_ended()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
        self._pending_bytes = 0
        if self._live:
            self._scanned = max(self._scanned, self._hub.head)  # everything was offered
            self._live = False
            self._hub._unregister(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.wake()
