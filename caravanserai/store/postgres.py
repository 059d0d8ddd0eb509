"""PostgresStore: objects, one global revision, the event log and the watch hub.

Revisions
---------
Every write transaction takes its revision from ONE counter row, as its last step before
COMMIT::

    UPDATE cara_revision SET rev = rev + 1 WHERE id RETURNING rev

The row lock this takes is held until the transaction ends, so from that statement to
COMMIT writers run one at a time: revision order is commit order, and a transaction that
rolls back gives its number back (the log has no gaps). That is what makes "read the log
after the last revision I saw" a complete way to follow changes: once revision N is
visible, every revision below N is visible too, because its writer committed (and left
the ProcArray) before N's writer could take the counter.

A sequence (``nextval``) would be wrong: numbers are handed out when a transaction asks,
not when it commits, and transactions commit out of that order. A watcher that has read
revision 11 while 10 is still uncommitted advances past 10 and never sees it. (kine's
fix — wait for the hole to fill, give up after a second — loses events and stalls under
load.)

The price is that writers serialise on the counter, so we hold it as briefly as possible:
everything that can fail or take time (reading the row, running the mutator, validating)
happens before, and the counter, the object row, the event row and the NOTIFY are ONE CTE
statement. Normally that statement runs in autocommit mode, i.e. it is its own
transaction and commits on the server the moment it finishes: the counter is held for
the statement's execution only, never across a round trip to Python (with many
coroutines on one event loop, the client may take a while to get back to a connection).
Creates are always like that. Updates and deletes make the statement conditional ("lock
the row if it is still the version I read, and only then take the counter"); if another
writer got in between, they redo the work inside BEGIN ... SELECT ... FOR UPDATE, and send
the write statement and its COMMIT in one pipeline, again keeping Python out of the
critical section.

Lock order is always "object row, then counter", and an object row is only ever changed
by whoever holds the counter, so nothing waits for anything while holding the counter and
writers cannot deadlock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import contextlib
import contextvars
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from types import TracebackType
from typing import Any

import psycopg
import structlog
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import TypeAdapter

from caravanserai.api.base import Timestamp, utcnow
from caravanserai.api.problems import (
    AlreadyExists,
    BadRequest,
    CaravanseraiError,
    Conflict,
    Expired,
    NotFound,
    Unavailable,
)
from caravanserai.api.selectors import Selector
from caravanserai.store import schema as _schema
from caravanserai.store.failover import POOL_CONNECTION_KWARGS, HistoryGuard
from caravanserai.store.hub import CHANNEL, HubLimits, HubWatch, WatchHub, db_errors
from caravanserai.store.pooled import pooled_connection
from caravanserai.store.types import ListResult, Mutator, Obj, StoreEvent

log = structlog.get_logger(__name__)

_TIMESTAMP: TypeAdapter[Any] = TypeAdapter(Timestamp)

# -- SQL ------------------------------------------------------------------------------------
# In every write the counter UPDATE (r) is what serialises writers; see the module docstring.
# The object row is modified only through a join with r, i.e. after the counter is held. That
# matters: an uncommitted change to a cara_objects key always belongs to the counter holder,
# so a create's unique check (which waits for uncommitted changes to the same key) can
# never wait while holding the counter itself, and writers cannot deadlock.

_SET_RV = "jsonb_set({obj}, '{{metadata,resourceVersion}}', to_jsonb({rev}::text))"

_CREATE = f"""
WITH r AS (
    UPDATE cara_revision SET rev = rev + 1 WHERE id RETURNING rev
), o AS (
    INSERT INTO cara_objects (kind, name, revision, uid, phase, state, node_ref, labels, object)
    SELECT %(kind)s, %(name)s, r.rev, %(uid)s, %(phase)s, %(state)s, %(node_ref)s, %(labels)s,
           {_SET_RV.format(obj="%(object)s", rev="r.rev")}
    FROM r
    RETURNING revision, object
), e AS (
    INSERT INTO cara_events (revision, kind, name, type, object)
    SELECT revision, %(kind)s, %(name)s, 'ADDED', object FROM o
)
SELECT revision, pg_notify('{CHANNEL}', revision::text) FROM o
""".encode()

# Runs with the row already locked (SELECT ... FOR UPDATE). `FROM r` makes the row change
# wait for the counter; the self-join p hands the previous state to the event without
# sending it back over the wire.
_UPDATE = f"""
WITH r AS (
    UPDATE cara_revision SET rev = rev + 1 WHERE id RETURNING rev
), o AS (
    UPDATE cara_objects t
       SET revision = r.rev, phase = %(phase)s, state = %(state)s, node_ref = %(node_ref)s,
           labels = %(labels)s, object = {_SET_RV.format(obj="%(object)s", rev="r.rev")}
      FROM r, cara_objects p
     WHERE t.kind = %(kind)s AND t.name = %(name)s AND p.kind = t.kind AND p.name = t.name
    RETURNING t.revision, t.object, p.object AS old_object
), e AS (
    INSERT INTO cara_events (revision, kind, name, type, object, old_object)
    SELECT revision, %(kind)s, %(name)s, 'MODIFIED', object, old_object FROM o
)
SELECT revision, pg_notify('{CHANNEL}', revision::text) FROM o
""".encode()

# Runs with the row already locked. `USING r` makes the row change wait for the counter.
_DELETE = f"""
WITH r AS (
    UPDATE cara_revision SET rev = rev + 1 WHERE id RETURNING rev
), d AS (
    DELETE FROM cara_objects USING r WHERE kind = %(kind)s AND name = %(name)s
    RETURNING r.rev, object
), e AS (
    INSERT INTO cara_events (revision, kind, name, type, object, old_object)
    SELECT rev, %(kind)s, %(name)s, 'DELETED', {_SET_RV.format(obj="object", rev="rev")},
           object
    FROM d
)
SELECT rev, pg_notify('{CHANNEL}', rev::text) FROM d
""".encode()

# The fast paths of update and delete: one self-committing statement. `cur` locks the row
# only if it is still the version the mutator saw; the counter is taken only then (the
# EXISTS is evaluated before the counter row is touched), keeping the lock order "object
# row, then counter". No row back means "changed meanwhile": redo under the row lock.
_UPDATE_IF = f"""
WITH cur AS (
    SELECT object FROM cara_objects
     WHERE kind = %(kind)s AND name = %(name)s AND revision = %(expected)s
       FOR UPDATE
), r AS (
    UPDATE cara_revision SET rev = rev + 1 WHERE id AND EXISTS (SELECT 1 FROM cur)
    RETURNING rev
), o AS (
    UPDATE cara_objects t
       SET revision = r.rev, phase = %(phase)s, state = %(state)s, node_ref = %(node_ref)s,
           labels = %(labels)s, object = {_SET_RV.format(obj="%(object)s", rev="r.rev")}
      FROM r, cur
     WHERE t.kind = %(kind)s AND t.name = %(name)s
    RETURNING t.revision, t.object, cur.object AS old_object
), e AS (
    INSERT INTO cara_events (revision, kind, name, type, object, old_object)
    SELECT revision, %(kind)s, %(name)s, 'MODIFIED', object, old_object FROM o
)
SELECT revision, pg_notify('{CHANNEL}', revision::text) FROM o
""".encode()

_DELETE_IF = f"""
WITH cur AS (
    SELECT 1 FROM cara_objects
     WHERE kind = %(kind)s AND name = %(name)s AND revision = %(expected)s
       FOR UPDATE
), r AS (
    UPDATE cara_revision SET rev = rev + 1 WHERE id AND EXISTS (SELECT 1 FROM cur)
    RETURNING rev
), d AS (
    DELETE FROM cara_objects USING r WHERE kind = %(kind)s AND name = %(name)s
    RETURNING r.rev, object
), e AS (
    INSERT INTO cara_events (revision, kind, name, type, object, old_object)
    SELECT rev, %(kind)s, %(name)s, 'DELETED', {_SET_RV.format(obj="object", rev="rev")},
           object
    FROM d
)
SELECT rev, pg_notify('{CHANNEL}', rev::text) FROM d
""".encode()

_LOCK_ROWS = (
    b"SELECT name, object FROM cara_objects WHERE kind = %s AND name = ANY(%s)"
    b" ORDER BY name FOR UPDATE"
)
_LOCK_ROW = b"SELECT object FROM cara_objects WHERE kind = %s AND name = %s FOR UPDATE"
_GET = b"SELECT object FROM cara_objects WHERE kind = %s AND name = %s"

# Server-managed metadata a mutator cannot change.
_IMMUTABLE_META = ("name", "uid", "creationTimestamp")


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): several times faster than deepcopy."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _meta(obj: Obj) -> dict[str, Any]:
    md = obj.get("metadata")
    if not isinstance(md, dict):
        raise BadRequest("object has no metadata")
    return md


def _promoted(obj: Obj) -> dict[str, Any]:
    """The filter columns of an object row."""
    status = obj.get("status") or {}
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {
        "phase": status.get("phase"),
        "state": status.get("state"),
        "node_ref": status.get("nodeRef"),
        "labels": Jsonb(labels),
    }


_RESERVED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cara_store_reserved", default=False
)


@contextlib.contextmanager
def reserved_connection() -> Iterator[None]:
    """Store calls in this block use the store's reserved connection, not the requests' pool.

    For the leader's lease: on a server whose pool is queued seconds deep with requests, a
    renewal that waited its turn would miss its deadline and the controller manager would
    lose leadership — and then relist everything, the heaviest thing it does — just when
    the cluster is busiest. One connection, so such calls run one at a time.
    """
    token = _RESERVED.set(True)
    try:
        yield
    finally:
        _RESERVED.reset(token)


_TOKEN_MAX_BYTES = 1024


def _encode_token(kind: str, revision: int, name: str) -> str:
    raw = json.dumps({"k": kind, "r": revision, "n": name}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str, kind: str) -> tuple[int, str]:
    # The token is client input: anything but the exact shape we issue is a 400 (nested
    # JSON would recurse, 1e999 overflow int(), a NUL reach PostgreSQL as a DataError).
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw) if len(raw) <= _TOKEN_MAX_BYTES else None
    except (ValueError, RecursionError, binascii.Error) as exc:
        raise BadRequest("invalid continue token") from exc
    if not isinstance(data, dict):
        raise BadRequest("invalid continue token")
    revision, name, token_kind = data.get("r"), data.get("n"), data.get("k")
    if (
        not isinstance(revision, int)
        or isinstance(revision, bool)
        or not 0 <= revision < 2**63
        or not isinstance(name, str)
        or not name.isprintable()
        or len(name) > 253
    ):
        raise BadRequest("invalid continue token")
    if token_kind != kind:
        raise BadRequest("continue token belongs to another kind")
    return revision, name


def _pushdown(selector: Selector | None) -> tuple[list[str], list[Any]]:
    """SQL conditions that select a superset of what ``selector.matches`` accepts.

    The exact check still runs in Python; this only keeps obviously unwanted rows in the
    database. Unset fields select as "" (as in ``Selector``), hence ``coalesce``.
    """
    if selector is None:
        return [], []
    columns = {
        "status.phase": "coalesce(phase, '')",
        "status.state": "coalesce(state, '')",
        "status.nodeRef": "coalesce(node_ref, '')",
        "metadata.name": "name",
        "involvedObject.kind": "coalesce(object #>> '{involvedObject,kind}', '')",
        "involvedObject.name": "coalesce(object #>> '{involvedObject,name}', '')",
    }
    conds: list[str] = []
    params: list[Any] = []
    for key, values in selector.any_of:
        conds.append(f"{columns[key]} = ANY(%s)")
        params.append(sorted(values))
    for req in selector.fields:
        col = columns[req.key]
        if req.op == "=":
            conds.append(f"{col} = ANY(%s)")
            params.append(sorted(req.values))
        elif req.op == "!=":
            conds.append(f"NOT ({col} = ANY(%s))")
            params.append(sorted(req.values))
    for req in selector.labels:
        if req.op in ("=", "in") and req.values:
            # Containment (@>) can use the GIN index on labels.
            ors = " OR ".join(["labels @> %s"] * len(req.values))
            conds.append(f"({ors})")
            params.extend(Jsonb({req.key: v}) for v in sorted(req.values))
        elif req.op == "exists":
            conds.append("labels ? %s")
            params.append(req.key)
        elif req.op == "!exists":
            conds.append("NOT (labels ? %s)")
            params.append(req.key)
    return conds, params


def _check_version(kind: str, name: str, md: dict[str, Any], expected: str | None) -> None:
    if expected is not None and expected != md.get("resourceVersion"):
        raise Conflict(
            f"{kind} {name!r} has been modified (resourceVersion "
            f"{md.get('resourceVersion')}, not {expected})"
        )


async def _rollback(conn: psycopg.AsyncConnection[Any]) -> None:
    # A broken connection cannot roll back; the pool discards it on return anyway.
    with contextlib.suppress(Exception):
        await conn.execute(b"ROLLBACK")


class PostgresStore:
    """The PostgreSQL implementation of ``caravanserai.store.types.Store``.

    Open with ``await PostgresStore.open(dsn)`` (or ``async with await ...open(dsn)``),
    close with ``await store.close()``. One instance per process: it owns a connection
    pool, the process's watch hub (one LISTEN connection) and the compaction task.
    """

    def __init__(
        self,
        dsn: str,
        pool: AsyncConnectionPool[Any],
        hub: WatchHub,
        *,
        retention_events: int | None,
        retention_age: timedelta | None,
        compaction_interval: float,
        query_timeout: float,
        recent_objects: int = 2048,
    ) -> None:
        """Use :meth:`open`; the constructor only wires already-created parts."""
        self._dsn = dsn
        self._pool = pool
        self._reserved: AsyncConnectionPool[Any] | None = None
        self._hub = hub
        self._retention_events = retention_events
        self._retention_age = retention_age
        self._compaction_interval = compaction_interval
        self._query_timeout = query_timeout
        self._compactor: asyncio.Task[None] | None = None
        self._closed = False
        # The last version of objects this process wrote (private copies), used as the
        # starting point of the next update of the same object instead of reading it: the
        # conditional write checks the revision anyway, so a stale entry costs one retry,
        # never correctness (kube-apiserver's GuaranteedUpdate does the same with its watch
        # cache). Dropped when the hub sees a newer revision of the object from anyone.
        self._recent: OrderedDict[tuple[str, str], Obj] = OrderedDict()
        self._recent_max = recent_objects
        self._guard: HistoryGuard | None = None
        hub.add_listener(self._forget_stale)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        pool_min: int = 2,
        pool_max: int = 20,
        retention_events: int | None = 100_000,
        retention_age: timedelta | None = timedelta(hours=1),
        compaction_interval: float = 60.0,
        apply_schema: bool = True,
        connect_timeout: float = 10.0,
        query_timeout: float = 30.0,
        poll_interval: float = 1.0,
        ring_size: int = 20_000,
        recent_objects: int = 2048,
        application_name: str = "caravanserai",
        hub_limits: HubLimits | None = None,
        listen_dsn: str | None = None,
    ) -> PostgresStore:
        """Connect, apply ``schema.sql`` (idempotent), start the watch hub and compaction.

        ``retention_events``/``retention_age`` bound the event log (a watch from an older
        revision gets Expired); ``compaction_interval`` is how often that is enforced
        (0 disables the background task; ``compact()`` still works). ``ring_size`` is how
        many recent events the watch hub keeps in memory (``hub_limits`` bounds its bytes,
        each watcher's queue and the wait for a future revision); ``recent_objects`` how many
        objects this process last wrote are remembered to save the read of an update.
        ``listen_dsn`` (default ``dsn``) is the watch hub's direct connection, for when
        ``dsn`` goes through a transaction-mode pooler (see ``store/failover.py``).
        """
        def make_pool(size_min: int, size_max: int, name: str) -> AsyncConnectionPool[Any]:
            return AsyncConnectionPool(
                dsn,
                min_size=size_min,
                max_size=size_max,
                open=False,
                timeout=connect_timeout,
                name=name,
                # autocommit: a create is one self-committing statement, and the other
                # writes manage BEGIN/COMMIT themselves so they can pipeline them.
                kwargs={
                    **POOL_CONNECTION_KWARGS,
                    "autocommit": True,
                    "connect_timeout": max(1, int(connect_timeout)),
                    "application_name": application_name,
                },
            )

        pool = make_pool(pool_min, pool_max, "cara-store")
        # One connection kept apart from the requests' pool: see reserved_connection().
        reserved = make_pool(1, 1, "cara-store-reserved")
        try:
            await pool.open(wait=True, timeout=connect_timeout)
            await reserved.open(wait=True, timeout=connect_timeout)
        except PoolTimeout as exc:
            await pool.close()
            await reserved.close()
            raise Unavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        hub = WatchHub(listen_dsn or dsn, pool, ring_size=ring_size, limits=hub_limits,
                       poll_interval=poll_interval,
                       connect_timeout=connect_timeout, query_timeout=query_timeout)
        store = cls(
            dsn, pool, hub,
            retention_events=retention_events, retention_age=retention_age,
            compaction_interval=compaction_interval, query_timeout=query_timeout,
            recent_objects=recent_objects,
        )
        store._guard = HistoryGuard(hub, on_reset=store._recent.clear)
        store._reserved = reserved
        try:
            if apply_schema:
                async with pooled_connection(pool) as conn:
                    await _schema.apply_schema(conn)
            await hub.start()
        except BaseException:
            await hub.close()
            await pool.close()
            await reserved.close()
            raise
        if compaction_interval > 0 and (retention_events is not None or retention_age):
            store._compactor = asyncio.create_task(store._compact_loop(), name="cara-compactor")
        log.info("store.opened", pool_max=pool_max, revision=hub.head)
        return store

    async def close(self) -> None:
        """Stop compaction and the watch hub (open watches end), close the pool."""
        if self._closed:
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        await self._hub.close()
        await self._pool.close()
        if self._reserved is not None:
            await self._reserved.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def failover_resets(self) -> int:
        """How often a failover lost revisions already served (each ended all watches)."""
        return self._guard.resets if self._guard is not None else 0

    @property
    def hub(self) -> WatchHub:
        """This process's watch hub (its ``listener_pid`` is useful in tests)."""
        return self._hub

    def connection(self) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """A pooled connection for the store's other tables (tokens); errors become 503."""
        return self._connection()

    @property
    def query_timeout(self) -> float:
        return self._query_timeout

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        pool = self._pool
        if _RESERVED.get() and self._reserved is not None:
            pool = self._reserved
        with db_errors():
            async with pooled_connection(pool) as conn:
                yield conn

    def _remember(self, kind: str, name: str, obj: Obj) -> None:
        if self._recent_max <= 0:
            return
        key = (kind, name)
        self._recent[key] = _copy(obj)
        self._recent.move_to_end(key)
        if len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def _forget_stale(self, events: builtins.list[StoreEvent]) -> None:
        recent = self._recent
        if not recent:
            return
        for ev in events:
            obj = recent.get((ev.kind, ev.name))
            if obj is not None and int(obj["metadata"]["resourceVersion"]) < ev.revision:
                del recent[(ev.kind, ev.name)]

    # -- reads ----------------------------------------------------------------------------

    async def get(self, kind: str, name: str) -> Obj:
        """The object, or NotFound."""
        async with self._connection() as conn, asyncio.timeout(self._query_timeout):
            cur = await conn.execute(_GET, (kind, name))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"{kind} {name!r} not found")
        obj: Obj = row[0]
        return obj

    async def current_revision(self) -> int:
        """The revision of the last committed write."""
        async with self._connection() as conn, asyncio.timeout(self._query_timeout):
            cur = await conn.execute(b"SELECT rev FROM cara_revision")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def compacted_revision(self) -> int:
        """The newest revision removed from the event log (watches must start at or after it)."""
        with db_errors():
            return await self._hub.compacted_revision()

    async def list(
        self,
        kind: str,
        selector: Selector | None = None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        """Objects of a kind, sorted by name, and the revision they are consistent with.

        The counter and the rows are read in one REPEATABLE READ snapshot, so the revision
        never claims a write the items do not show (and vice versa): a watch from it misses
        nothing. With ``limit``, ``continue_token`` carries (revision, last name); later
        pages show the objects as they were at the first page's revision, rebuilt from the
        event log (``old_object`` of the first event after that revision), or raise Expired
        once that revision is compacted, like Kubernetes.
        """
        if limit is not None and limit <= 0:
            limit = None
        sel = None if selector is None or selector.empty else selector
        token = _decode_token(continue_token, kind) if continue_token else None
        conds, cond_params = _pushdown(sel)
        async with self._connection() as conn, asyncio.timeout(self._query_timeout):
            try:
                async with conn.pipeline():
                    await conn.execute(b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    cur = await conn.execute(
                        b"SELECT r.rev, c.revision FROM cara_revision r, cara_compaction c"
                    )
                    row = await cur.fetchone()
                assert row is not None
                now_rev, compacted = int(row[0]), int(row[1])
                if token is None:
                    at, after = now_rev, None
                else:
                    at, after = token
                    if at > now_rev:
                        raise BadRequest("continue token is from the future")
                    if at < compacted:
                        raise Expired(
                            f"the list's revision {at} has been compacted; start a new list"
                        )
                items = await self._scan(conn, kind, sel, conds, cond_params, at,
                                         at < now_rev, after, limit)
            finally:
                await _rollback(conn)  # read-only: ROLLBACK ends it as well as COMMIT
        next_token = None
        if limit is not None and len(items) > limit:
            items = items[:limit]
            next_token = _encode_token(kind, at, items[-1]["metadata"]["name"])
        return ListResult(items=items, revision=at, continue_token=next_token)

    async def _scan(
        self,
        conn: psycopg.AsyncConnection[Any],
        kind: str,
        sel: Selector | None,
        conds: builtins.list[str],
        cond_params: builtins.list[Any],
        at: int,
        in_past: bool,
        after: str | None,
        limit: int | None,
    ) -> builtins.list[Obj]:
        """Up to limit+1 matching objects with name > after, as of revision ``at``."""
        want = None if limit is None else limit + 1
        # With a selector Python may reject rows, so read in larger chunks than needed.
        chunk = None if want is None else (want if sel is None else max(want, 256))
        items: builtins.list[Obj] = []
        cursor = after
        while True:
            where = ["kind = %s"]
            params: builtins.list[Any] = [kind]
            if cursor is not None:
                where.append("name > %s")
                params.append(cursor)
            if conds:
                pushed = " AND ".join(conds)
                if in_past:
                    # Rows changed after `at` are judged on their state at `at`, in Python.
                    where.append(f"(({pushed}) OR revision > %s)")
                    params += [*cond_params, at]
                else:
                    where.append(f"({pushed})")
                    params += cond_params
            query = (
                f"SELECT name, revision, object FROM cara_objects WHERE {' AND '.join(where)} "
                "ORDER BY name"
            )
            if chunk is not None:
                query += " LIMIT %s"
                params.append(chunk)
            cur = await conn.execute(query.encode(), params)
            rows = await cur.fetchall()
            hi: str | None = rows[-1][0] if chunk is not None and len(rows) == chunk else None

            candidates: dict[str, Obj | None] = {}
            if in_past:
                past = await self._states_at(conn, kind, at, cursor, hi)
                for name, revision, obj in rows:
                    candidates[name] = past.get(name) if revision > at else obj
                for name, old in past.items():
                    candidates.setdefault(name, old)  # deleted since `at`
            else:
                candidates = {name: obj for name, _, obj in rows}
            for name in sorted(candidates):
                obj = candidates[name]
                if obj is None or (sel is not None and not sel.matches(obj)):
                    continue
                items.append(obj)
                if want is not None and len(items) >= want:
                    return items
            if hi is None:
                return items
            cursor = hi

    @staticmethod
    async def _states_at(
        conn: psycopg.AsyncConnection[Any], kind: str, at: int, lo: str | None, hi: str | None
    ) -> dict[str, Obj | None]:
        """For each object changed after ``at`` (lo < name <= hi): its state at ``at``.

        That is the ``old_object`` of its first event after ``at``; None if it did not
        exist then (its first event is ADDED).
        """
        where = ["kind = %s", "revision > %s"]
        params: builtins.list[Any] = [kind, at]
        if lo is not None:
            where.append("name > %s")
            params.append(lo)
        if hi is not None:
            where.append("name <= %s")
            params.append(hi)
        cur = await conn.execute(
            (
                "SELECT DISTINCT ON (name) name, old_object FROM cara_events "
                f"WHERE {' AND '.join(where)} ORDER BY name, revision"
            ).encode(),
            params,
        )
        return {name: old for name, old in await cur.fetchall()}

    # -- writes ---------------------------------------------------------------------------

    async def create(self, obj: Obj) -> Obj:
        """Store a new object: sets uid, generation 1, creationTimestamp, resourceVersion.

        Raises AlreadyExists if an object of that kind and name exists.
        """
        new = _copy(obj)
        kind = new.get("kind")
        md = _meta(new)
        name = md.get("name")
        if not isinstance(kind, str) or not isinstance(name, str) or not name:
            raise BadRequest("object needs kind and metadata.name")
        for server_managed in ("resourceVersion", "deletionTimestamp"):
            md.pop(server_managed, None)
        md["uid"] = str(uuid.uuid4())
        md["generation"] = 1
        md["creationTimestamp"] = _TIMESTAMP.dump_python(utcnow(), mode="json")
        params = {"kind": kind, "name": name, "uid": md["uid"], "object": Jsonb(new),
                  **_promoted(new)}
        async with self._connection() as conn, asyncio.timeout(self._query_timeout):
            try:
                # Autocommit: this one statement is the whole transaction, so the counter
                # lock lasts exactly as long as the statement runs on the server.
                cur = await conn.execute(_CREATE, params)
                row = await cur.fetchone()
            except psycopg.errors.UniqueViolation as exc:
                raise AlreadyExists(f"{kind} {name!r} already exists") from exc
        assert row is not None
        md["resourceVersion"] = str(row[0])
        self._remember(kind, name, new)
        return new

    async def update(
        self, kind: str, name: str, mutate: Mutator, *, resource_version: str | None = None
    ) -> Obj:
        """Read-modify-write one object.

        ``mutate`` gets a deep copy of the current object and returns the new one, or None
        (or an unchanged copy) for "nothing to do": no write, no revision, the current
        object is returned. It may raise any CaravanseraiError (e.g. Conflict for an illegal
        phase transition), which aborts the update. ``resource_version``, if given, must be
        the current one (else Conflict). ``generation`` is bumped iff ``spec`` changed;
        name, uid and creationTimestamp cannot change.

        ``mutate`` may run more than once (at most three times: on this process's last
        written copy of the object, on a fresh read, and under the row lock if another
        writer got in between), so it must be a function of its argument without side
        effects; only its last run counts.
        """
        async with self._connection() as conn, asyncio.timeout(self._query_timeout):
            # Fastest path: start from the copy this process wrote last (no read at all).
            key = (kind, name)
            cached = self._recent.get(key)
            if cached is not None and resource_version in (
                None, cached["metadata"].get("resourceVersion")
            ):
                revision, new = await self._try_cached(conn, kind, name, cached, mutate)
                if revision is not None:
                    _meta(new)["resourceVersion"] = str(revision)
                    self._remember(kind, name, new)
                    return new
                self._recent.pop(key, None)
            # Read, mutate, then one self-committing statement that locks the row, checks
            # it is still the version we read, and writes.
            current = await self._read(conn, kind, name)
            result = self._apply(kind, name, current, mutate, resource_version)
            if result is None:
                return current
            new, params = result
            revision = await self._try_write(conn, _UPDATE_IF, params, current)
            if revision is None:
                # Lost a race: redo under the row lock, so this cannot loop.
                try:
                    current = await self._lock(conn, kind, name)
                    result = self._apply(kind, name, current, mutate, resource_version)
                    if result is None:
                        await _rollback(conn)
                        return current
                    new, params = result
                    revision = await self._write_and_commit(conn, _UPDATE, params)
                except BaseException:
                    await _rollback(conn)
                    raise
        _meta(new)["resourceVersion"] = str(revision)
        self._remember(kind, name, new)
        return new

    async def _try_cached(
        self, conn: psycopg.AsyncConnection[Any], kind: str, name: str, cached: Obj,
        mutate: Mutator,
    ) -> tuple[int | None, Obj]:
        """Attempt the update on the remembered version; (None, _) unless it was written.

        Only a successful conditional write counts: "no change" or an error from the
        mutator may be an artefact of a stale copy, so the caller decides again on fresh
        data.
        """
        try:
            result = self._apply(kind, name, _copy(cached), mutate, None)
        except Exception:
            return None, cached
        if result is None:
            return None, cached
        new, params = result
        return await self._try_write(conn, _UPDATE_IF, params, cached), new

    @staticmethod
    def _apply(
        kind: str, name: str, current: Obj, mutate: Mutator, resource_version: str | None
    ) -> tuple[Obj, dict[str, Any]] | None:
        """Run the mutator and fix up server-managed fields; None if nothing changes."""
        cur_md = _meta(current)
        _check_version(kind, name, cur_md, resource_version)
        new = mutate(_copy(current))
        if new is None:
            return None
        new_md = _meta(new)
        for key in _IMMUTABLE_META:
            if key in cur_md:
                new_md[key] = cur_md[key]
        new["kind"] = current.get("kind", kind)
        if "apiVersion" in current:
            new["apiVersion"] = current["apiVersion"]
        new_md["resourceVersion"] = cur_md.get("resourceVersion")
        generation = int(cur_md.get("generation") or 1)
        new_md["generation"] = generation + (new.get("spec") != current.get("spec"))
        if new == current:
            return None
        return new, {"kind": kind, "name": name, "object": Jsonb(new), **_promoted(new)}

    async def update_many(
        self, kind: str, updates: builtins.list[tuple[str, Mutator, str | None]]
    ) -> builtins.list[Obj | CaravanseraiError]:
        """Several read-modify-writes of one kind in ONE transaction (batch binding).

        Each ``(name, mutate, resource_version)`` is its own write with its own revision and
        event, exactly as :meth:`update` would make it; the results come back in order: the
        new object, the unchanged current one (mutator returned None), or the error that
        refused it (NotFound, Conflict for a stale resourceVersion, or what the mutator
        raised). A refused one is skipped; the others commit together.

        Rows are locked in name order before the counter is taken (the store's lock order:
        object rows, then counter), so batches and single writers cannot deadlock. The
        writes and the COMMIT go in one pipeline, keeping Python out of the time the
        counter is held.
        """
        results: builtins.list[Obj | CaravanseraiError] = []
        if not updates:
            return results
        names = sorted({name for name, _, _ in updates})
        async with self._connection() as conn, asyncio.timeout(self._query_timeout):
            try:
                async with conn.pipeline():
                    await conn.execute(b"BEGIN")
                    cur = await conn.execute(_LOCK_ROWS, (kind, names))
                    rows = await cur.fetchall()
                current: dict[str, Obj] = {name: obj for name, obj in rows}
                writes: builtins.list[tuple[int, str, Obj, dict[str, Any]]] = []
                for name, mutate, resource_version in updates:
                    obj = current.get(name)
                    if obj is None:
                        results.append(NotFound(f"{kind} {name!r} not found"))
                        continue
                    try:
                        result = self._apply(kind, name, obj, mutate, resource_version)
                    except CaravanseraiError as exc:
                        results.append(exc)
                        continue
                    if result is None:
                        results.append(obj)
                        continue
                    new, params = result
                    # A later update of the same name in this batch builds on this one.
                    current[name] = new
                    writes.append((len(results), name, new, params))
                    results.append(new)
                if not writes:
                    await _rollback(conn)
                    return results
                async with conn.pipeline():
                    cursors = [await conn.execute(_UPDATE, params) for *_, params in writes]
                    await conn.execute(b"COMMIT")
                revisions = [await c.fetchone() for c in cursors]
            except BaseException:
                await _rollback(conn)
                raise
        for (index, name, new, _), row in zip(writes, revisions, strict=True):
            if row is None:  # cannot happen while we hold the row locks
                raise RuntimeError("write affected no row")
            _meta(new)["resourceVersion"] = str(row[0])
            self._remember(kind, name, new)
            results[index] = new
        return results

    async def delete(
        self,
        kind: str,
        name: str,
        *,
        resource_version: str | None = None,
        precondition: Callable[[Obj], None] | None = None,
    ) -> Obj:
        """Remove an object; returns its last state (resourceVersion = the delete's).

        ``precondition(obj)`` may raise to refuse; it sees the version that is deleted
        (the delete only happens if the object is unchanged since).
        """
        async with self._connection() as conn, asyncio.timeout(self._query_timeout):
            current = await self._read(conn, kind, name)
            _check_version(kind, name, _meta(current), resource_version)
            if precondition is not None:
                precondition(_copy(current))
            params = {"kind": kind, "name": name}
            revision = await self._try_write(conn, _DELETE_IF, params, current)
            if revision is None:
                try:
                    current = await self._lock(conn, kind, name)
                    _check_version(kind, name, _meta(current), resource_version)
                    if precondition is not None:
                        precondition(_copy(current))
                    revision = await self._write_and_commit(conn, _DELETE, params)
                except BaseException:
                    await _rollback(conn)
                    raise
        self._recent.pop((kind, name), None)
        _meta(current)["resourceVersion"] = str(revision)
        return current

    @staticmethod
    async def _read(conn: psycopg.AsyncConnection[Any], kind: str, name: str) -> Obj:
        cur = await conn.execute(_GET, (kind, name))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"{kind} {name!r} not found")
        obj: Obj = row[0]
        return obj

    @staticmethod
    async def _try_write(
        conn: psycopg.AsyncConnection[Any], query: bytes, params: dict[str, Any], read: Obj
    ) -> int | None:
        """The conditional write (autocommit): its revision, or None if the object changed.

        Being one statement, its transaction commits on the server right after it, so the
        counter is held for microseconds and never across a round trip to Python.
        """
        expected = int(_meta(read).get("resourceVersion") or 0)
        cur = await conn.execute(query, {**params, "expected": expected})
        row = await cur.fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    async def _lock(conn: psycopg.AsyncConnection[Any], kind: str, name: str) -> Obj:
        """BEGIN and lock the row (one round trip); NotFound if it does not exist."""
        async with conn.pipeline():
            await conn.execute(b"BEGIN")
            cur = await conn.execute(_LOCK_ROW, (kind, name))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"{kind} {name!r} not found")
        obj: Obj = row[0]
        return obj

    @staticmethod
    async def _write_and_commit(
        conn: psycopg.AsyncConnection[Any], query: bytes, params: dict[str, Any]
    ) -> int:
        """Run the counter+object+event+notify statement and COMMIT in one round trip."""
        async with conn.pipeline():
            cur = await conn.execute(query, params)
            await conn.execute(b"COMMIT")
        row = await cur.fetchone()
        if row is None:  # cannot happen while we hold the row lock; never commit silently
            raise RuntimeError("write affected no row")
        return int(row[0])

    # -- watch ----------------------------------------------------------------------------

    def watch(
        self,
        kind: str | None,
        after_revision: int,
        selector: Selector | None = None,
        *,
        max_queued_bytes: int | None = None,
    ) -> HubWatch:
        """Events with revision > ``after_revision`` (of ``kind``, or all kinds if None).

        Exactly once each, in revision order; with a selector, objects starting/stopping to
        match arrive as ADDED/DELETED. Raises Expired (on entry or first ``next()``) if
        ``after_revision`` is older than the retained log.
        """
        return self._hub.watch(kind, after_revision, selector, max_queued_bytes=max_queued_bytes)

    # -- compaction -----------------------------------------------------------------------

    async def compact(
        self, *, max_events: int | None = None, max_age: timedelta | None = None
    ) -> int:
        """Delete log entries beyond the newest ``max_events`` or older than ``max_age``.

        Returns the compacted revision (watches and paginated lists from before it get
        Expired). Only committed revisions exist in the log, so nothing a watch at or
        after the horizon needs is ever removed.
        """
        async with self._connection() as conn, asyncio.timeout(self._query_timeout):
            try:
                await conn.execute(b"BEGIN")
                cur = await conn.execute(
                    b"SELECT c.revision, r.rev FROM cara_compaction c, cara_revision r "
                    b"FOR UPDATE OF c"
                )
                row = await cur.fetchone()
                assert row is not None
                compacted, current = int(row[0]), int(row[1])
                target = compacted
                if max_events is not None:
                    target = max(target, current - max_events)
                if max_age is not None:
                    cur = await conn.execute(
                        b"SELECT coalesce(max(revision), 0) FROM cara_events "
                        b"WHERE revision > %s AND created_at < now() - %s",
                        (compacted, max_age),
                    )
                    aged = await cur.fetchone()
                    target = max(target, int(aged[0]) if aged else 0)
                target = min(target, current)
                if target > compacted:
                    cur = await conn.execute(
                        b"DELETE FROM cara_events WHERE revision <= %s", (target,)
                    )
                    removed = cur.rowcount
                    await conn.execute(
                        b"UPDATE cara_compaction SET revision = %s, compacted_at = now()",
                        (target,),
                    )
                    await conn.execute(b"COMMIT")
                    log.info("store.compacted", revision=target, removed=removed)
                else:
                    await _rollback(conn)
            except BaseException:
                await _rollback(conn)
                raise
        return target

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self._compaction_interval)
            try:
                await self.compact(max_events=self._retention_events,
                                   max_age=self._retention_age)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("store.compaction_failed", exc_info=True)
