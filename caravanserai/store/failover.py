"""Surviving a PostgreSQL failover: connection settings and the revision-history guard.

What changes when a standby is promoted (Patroni, a managed service, ``pg_ctl promote``):

* Connections to the old primary break. The pool and the listener reconnect through the
  DSN, which may list several hosts (``host=a,b target_session_attrs=read-write`` or
  ``postgresql://a,b/db?target_session_attrs=read-write``): libpq tries them in order and
  keeps the one that accepts writes. A request whose connection broke answers 503 with
  ``Retry-After`` (``hub.db_errors``); its write either committed once or not at all, and
  the client retries idempotently (a create by name answers 409 AlreadyExists if the first
  attempt landed, an update with its resourceVersion 409 Conflict).
* With asynchronous replication the last commits of the old primary may never have reached
  the standby. The new primary's revision counter is then BELOW revisions this process has
  already handed to watchers, and the next writes reuse those numbers for different events.
  A watcher resuming from such a revision would wait for numbers that mean something else
  (or silently skip them). :class:`HistoryGuard` notices this when the listener reconnects:
  the counter went backwards, or the event stored under the last revision the hub served is
  not the one it served. It then resets the hub (``WatchHub.reset_after_failover``): every
  open watch ends with the 410 ERROR event and its informer relists, which is the only
  correct recovery; the lost writes themselves are gone, as PostgreSQL promised nothing else.

A pooler (PgBouncer in transaction mode) may front the query pool. It cannot carry
prepared statements across transactions, so the pool never prepares (``prepare_threshold``
None); it cannot carry LISTEN at all, so the listener may take its own direct DSN
(``CARA_LISTEN_DATABASE_URL``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from caravanserai.store.hub import WatchHub
from caravanserai.store.types import StoreEvent

log = structlog.get_logger(__name__)

POOL_CONNECTION_KWARGS: dict[str, Any] = {
    # psycopg prepares a statement after 5 executions by default; behind a transaction-mode
    # pooler the next transaction may run on another server connection, where the
    # statement does not exist ("prepared statement _pg3_0 does not exist").
    "prepare_threshold": None,
    # Find a silently dead peer (a host that vanished in a failover) in seconds.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

_HEAD_CHECK = (
    b"SELECT r.rev, e.kind, e.name, e.type, e.object "
    b"FROM cara_revision r LEFT JOIN cara_events e ON e.revision = %s"
)


def history_lost(
    head: int, last: StoreEvent | None, current: int, stored: tuple[Any, ...] | None
) -> bool:
    """Whether the database no longer holds the history up to ``head`` that was served.

    ``last`` is the event served at ``head`` (None if unknown), ``current`` the database's
    revision counter now, ``stored`` the (kind, name, type, object) it keeps under ``head``
    (None when that log row is gone, e.g. compacted).
    """
    if current < head:
        return True  # the counter went backwards: revisions up to head are gone
    if last is None or last.revision != head or stored is None:
        return False  # nothing to compare with; the counter is the only evidence
    kind, name, type_, obj = stored
    return (kind, name, str(type_), obj) != (last.kind, last.name, str(last.type), last.object)


class HistoryGuard:
    """Watches what the hub serves and checks it against the database on each reconnect."""

    def __init__(self, hub: WatchHub, on_reset: Callable[[], None] | None = None) -> None:
        self._hub = hub
        self._last: StoreEvent | None = None
        self._on_reset = on_reset
        self.resets = 0
        hub.add_listener(self._remember)
        hub.set_reconnect_check(self.check)

    def _remember(self, events: list[StoreEvent]) -> None:
        self._last = events[-1]

    async def check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Compare the database's history with what was served; reset the hub if it lost any."""
        head = self._hub.head
        cur = await conn.execute(_HEAD_CHECK, (head,))
        row = await cur.fetchone()
        current = int(row[0]) if row else 0
        stored = tuple(row[1:]) if row is not None and row[1] is not None else None
        if not history_lost(head, self._last, current, stored):
            return
        log.warning("store.failover_lost_revisions", served=head, database=current)
        self.resets += 1
        self._last = None
        self._hub.reset_after_failover(current)
        if self._on_reset is not None:
            self._on_reset()
