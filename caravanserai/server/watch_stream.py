"""``GET /api/v1/{plural}?watch=true``: newline-delimited JSON watch streams.

One line per event, ``{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": ...}``:

* with ``resourceVersion=R`` (R > 0): every event after R, in revision order, exactly once;
* without it (or ``R=0``): the current objects as ADDED (a list at revision L), then every
  event after L. With bookmarks allowed, a BOOKMARK at L follows the initial ADDED events,
  so the client knows which revision its initial state stands for;
* selectors (``labelSelector``, ``fieldSelector``, ``phase``, ``nodeRef``) filter, and an
  object that starts / stops matching arrives as ADDED / DELETED (the store's hub does that);
* ``allowWatchBookmarks=true``: after ``bookmark_interval`` seconds without a line, a
  BOOKMARK ``{"apiVersion", "kind", "metadata": {"resourceVersion": N}}`` with the
  watcher's current revision (safe to resume from);
* ``timeoutSeconds`` (capped by ``watch_timeout``) ends the stream cleanly;
* an expired revision (compacted out of the event log) always gives **200 + one ERROR
  event** carrying the 410 problem, then the end of the stream, whether the expiry is found
  at the start or later (as Kubernetes). One code path for clients: relist on ERROR 410.
  Bad parameters, found before streaming, are plain 400 problems.

Watchers share the store's hub (one LISTEN connection per process, no polling per watch).
On shutdown every open stream is ended cleanly (terminating chunk), not reset.

Fan-out costs: each event is encoded once per wire form (kind, revision, type) and the
same bytes go to every watcher that receives it (a byte-bounded cache). A stream wakes
once per batch the hub reads (under load the hub reads at most every ``watch_linger``
seconds) and writes everything pending for it in one write, with no timer per event.
Memory is bounded per watcher: its undelivered events plus the socket's unsent bytes
may not exceed ``watch_queue_bytes``. A client that does not read
that fast is ended with the 410 ERROR event (it relists), as kube-apiserver closes an
unresponsive watcher; ``cara_watch_slow_terminated_total`` counts them. A watch from a
revision this server has not reached waits ``watch_future_wait`` seconds for it, then gets
``504`` "too large resource version" with ``Retry-After: 1`` (informers relist).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from caravanserai.api.base import API_VERSION
from caravanserai.api.event import RecordKind
from caravanserai.api.problems import BadRequest, Expired, Unavailable
from caravanserai.api.resources import ResourceKind
from caravanserai.api.selectors import Selector
from caravanserai.api.watch import EventType
from caravanserai.logging import get_logger
from caravanserai.server.httputil import bool_param, ordered
from caravanserai.server.problems import dumps
from caravanserai.server.state import CONFIG, METRICS, STORE, WATCHES
from caravanserai.store.types import Obj, Watch

log = get_logger("caravanserai.server.watch")

NDJSON = "application/x-ndjson"
# Without handler cancellation (aiohttp's default) a vanished client is only noticed when we
# write or look: idle watches look at least this often.
_LIVENESS_CHECK = 5.0
# At most this many events / bytes go out in one write (bounds a write's size when behind).
_MAX_BATCH = 256
_MAX_BATCH_BYTES = 1024 * 1024
_ENCODED_CACHE_SIZE = 4096
# How long the last line (ERROR) and the end of a stream may wait for a client that does not
# read, before the connection is dropped (its unsent bytes freed).
_FINAL_WRITE_TIMEOUT = 10.0


class _ActiveWatch:
    """One open stream, as seen by the registry (to end it on shutdown)."""

    __slots__ = ("ended", "stopping", "task", "waiting")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        # Inside store.next() or waiting for the socket to drain: safe to cancel (a write
        # puts its whole chunk in the transport before it waits, so no line is cut).
        self.waiting = False
        self.stopping = False
        self.ended = False  # the hub ended the watch (too slow): next() raises Expired

    def stop(self) -> None:
        self.stopping = True
        self._interrupt()

    def end(self) -> None:
        self.ended = True
        self._interrupt()

    def _interrupt(self) -> None:
        if self.waiting and self.task is not None:
            self.task.cancel()


class WatchRegistry:
    """The open watch streams of one app, and a cache of encoded event lines.

    Encoding is the dominant per-watcher cost (hundreds of watchers receive the same
    object): a line is encoded once per (kind, revision, type) and shared. The cache is
    bounded by count and by bytes (oldest first out: watchers read near the head).
    """

    def __init__(self, cache_bytes: int = 32 * 1024 * 1024) -> None:
        self._active: set[_ActiveWatch] = set()
        self.closing = False
        self._encoded: dict[tuple[str, int, str], bytes] = {}
        self._encoded_bytes = 0
        self._cache_bytes = cache_bytes

    @property
    def cached_bytes(self) -> int:
        return self._encoded_bytes

    def __len__(self) -> int:
        return len(self._active)

    def add(self, watch: _ActiveWatch) -> None:
        self._active.add(watch)

    def discard(self, watch: _ActiveWatch) -> None:
        self._active.discard(watch)

    def stop_all(self) -> None:
        """End every open stream (server shutdown); new watches are refused (503)."""
        self.closing = True
        for watch in list(self._active):
            watch.stop()

    def encode(self, kind: str, revision: int, type_: str, obj: Obj) -> bytes:
        key = (kind, revision, type_)
        line = self._encoded.get(key)
        if line is None:
            line = _line(type_, obj)
            if len(line) > self._cache_bytes // 4:
                return line  # a huge object: not worth evicting everything else for
            encoded = self._encoded
            encoded[key] = line
            self._encoded_bytes += len(line)
            while len(encoded) > _ENCODED_CACHE_SIZE or self._encoded_bytes > self._cache_bytes:
                oldest = next(iter(encoded))
                self._encoded_bytes -= len(encoded.pop(oldest))
        return line


def _line(type_: EventType | str, obj: Obj) -> bytes:
    data = {"type": str(type_), "object": ordered(obj)}
    try:
        # orjson: the same compact UTF-8 JSON as ``problems.dumps``, several times faster.
        return orjson.dumps(data) + b"\n"
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, which json handles
        return (dumps(data) + "\n").encode()


def bookmark(kind: ResourceKind | RecordKind, revision: int) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": kind.kind,
        "metadata": {"resourceVersion": str(revision)},
    }


def _start_revision(request: web.Request) -> int | None:
    value = (request.query.get("resourceVersion") or "").strip()
    if value in ("", "0"):
        return None
    try:
        revision = int(value)
    except ValueError:
        raise BadRequest(f"resourceVersion must be a revision number, not {value!r}") from None
    if revision < 0:
        raise BadRequest("resourceVersion must not be negative")
    return revision


def _timeout(request: web.Request, cap: float) -> float:
    value = request.query.get("timeoutSeconds")
    if value is None or value.strip() == "":
        return cap
    try:
        seconds = int(value)
    except ValueError:
        raise BadRequest(f"timeoutSeconds must be an integer, not {value!r}") from None
    if seconds < 0:
        raise BadRequest("timeoutSeconds must not be negative")
    return min(float(seconds), cap) if seconds > 0 else cap


@dataclass(frozen=True)
class WatchParams:
    start: int | None  # None: list first
    bookmarks: bool
    duration: float


def watch_params(request: web.Request) -> WatchParams:
    """The watch query parameters, validated (also on plain lists: a bad value is a 400
    whether or not ``watch`` is set, so a typo is never silently ignored)."""
    return WatchParams(
        start=_start_revision(request),
        bookmarks=bool_param(request, "allowWatchBookmarks"),
        duration=_timeout(request, request.app[CONFIG].watch_timeout),
    )


async def serve_watch(
    request: web.Request,
    kind: ResourceKind | RecordKind,
    selector: Selector,
    params: WatchParams,
) -> web.StreamResponse:
    """Stream watch events until the timeout, an ERROR, the client leaving or shutdown."""
    app = request.app
    store, metrics, registry = app[STORE], app[METRICS], app[WATCHES]
    start = params.start
    if registry.closing:
        raise Unavailable("server is shutting down; reconnect to another replica or retry")

    initial: list[Obj] = []
    listed_first = start is None
    if start is None:
        listed = await store.list(kind.kind, selector)
        initial, start = listed.items, listed.revision
        metrics.observe_revision(start)
    watch = store.watch(
        kind.kind, start, selector, max_queued_bytes=app[CONFIG].watch_queue_bytes
    )
    expired: Expired | None = None
    try:
        # Before the 200: a revision ahead of this server is a plain 504 problem (with
        # Retry-After), found after a short wait; an expired one is the ERROR event below.
        await watch.start()
    except Expired as exc:
        expired = exc
    except BaseException:
        await watch.aclose()
        raise
    try:
        return await _stream(request, kind, watch, initial, start, listed_first, params, expired)
    finally:
        await watch.aclose()


async def _stream(
    request: web.Request,
    kind: ResourceKind | RecordKind,
    watch: Watch,
    initial: list[Obj],
    start: int,
    listed_first: bool,
    params: WatchParams,
    expired: Expired | None,
) -> web.StreamResponse:
    app = request.app
    config, metrics, registry = app[CONFIG], app[METRICS], app[WATCHES]
    bookmarks, duration = params.bookmarks, params.duration
    interval = config.bookmark_interval
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": NDJSON,
            "Cache-Control": "no-cache, no-store",
            # Reverse proxies (nginx) must pass lines through, not buffer the stream.
            "X-Accel-Buffering": "no",
        },
    )
    response.enable_chunked_encoding()
    await response.prepare(request)

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    active = _ActiveWatch(task)
    registry.add(active)
    gauge = metrics.open_watches.labels(kind.kind)
    gauge.inc()
    delivered: dict[str, Any] = {}
    transport = request.transport

    def unsent() -> int:
        return transport.get_write_buffer_size() if transport is not None else 0

    def ended_by_hub() -> None:
        metrics.slow_watchers.labels(kind.kind).inc()
        active.end()

    watch.set_output(unsent, ended_by_hub)

    def count(type_: str, n: int = 1) -> None:
        child = delivered.get(type_)
        if child is None:
            child = delivered[type_] = metrics.events_delivered.labels(kind.kind, type_)
        child.inc(n)

    log.info(
        "watch.started",
        kind=kind.kind,
        resource_version=start,
        initial=len(initial),
        selector=request.query_string or None,
        peer=request.remote,
    )
    ended = "timeout"
    sent = 0
    revision = start
    try:
        if expired is not None:
            raise expired
        for i in range(0, len(initial), _MAX_BATCH):
            chunk = initial[i : i + _MAX_BATCH]
            await response.write(b"".join(_line(EventType.ADDED, obj) for obj in chunk))
            count("ADDED", len(chunk))
            sent += len(chunk)
        if listed_first and bookmarks:
            # "The initial state above is the state at revision L" (a resume point).
            await response.write(_line(EventType.BOOKMARK, bookmark(kind, start)))
            count("BOOKMARK")
        deadline = loop.time() + duration
        last_line = loop.time()
        encode = registry.encode
        while not active.stopping:
            now = loop.time()
            if now >= deadline:
                break
            # One deadline per wait, the watch keeps one timer for it (re-armed only when
            # it must fire earlier): no timer handle per event.
            wake_at = min(deadline, last_line + interval) if bookmarks else deadline
            wake_at = min(wake_at, now + _LIVENESS_CHECK)
            active.waiting = True
            try:
                events = await watch.next_batch(
                    wake_at, max_events=_MAX_BATCH, max_bytes=_MAX_BATCH_BYTES
                )
            except asyncio.CancelledError:
                if (active.stopping or active.ended) and task is not None:
                    task.uncancel()  # our own signal: end cleanly below / get Expired
                    continue
                raise
            finally:
                active.waiting = False
            if not events:
                if transport is None or transport.is_closing():
                    ended = "client gone"
                    break
                if bookmarks and loop.time() - last_line >= interval:
                    revision = max(revision, watch.revision)
                    await response.write(_line(EventType.BOOKMARK, bookmark(kind, revision)))
                    count("BOOKMARK")
                    last_line = loop.time()
                continue
            # Everything pending for this watcher leaves in one write: under load a
            # wake-up and a syscall per event per watcher are the dominant cost of fan-out.
            name = kind.kind
            lines = [encode(name, ev.revision, ev.type, ev.object) for ev in events]
            revision = events[-1].revision
            active.waiting = True  # a slow client blocks us in drain: the hub may end us
            try:
                await response.write(lines[0] if len(lines) == 1 else b"".join(lines))
            except asyncio.CancelledError:
                if (active.stopping or active.ended) and task is not None:
                    task.uncancel()  # the chunk is in the transport whole; stop waiting
                else:
                    raise
            finally:
                active.waiting = False
            if len(events) == 1:
                count(events[0].type)
            else:
                types = Counter(ev.type for ev in events)
                for type_, n in types.items():
                    count(type_, n)
            sent += len(events)
            last_line = loop.time()
            metrics.observe_revision(revision)
        if active.stopping:
            ended = "shutdown"
        metrics.observe_revision(revision)
    except Expired as exc:
        ended = "too slow" if active.ended else "expired"
        problem = exc.to_problem(instance=request.path).model_dump(mode="json", exclude_none=True)
        line = _line(EventType.ERROR, problem)
        if not await _finish(response, transport, line, drain=active.ended):
            ended += ", client not reading"
        else:
            count("ERROR")
        return _done(registry, active, gauge, kind, ended, sent, revision, response)
    except Unavailable:
        ended = "store closed"
    except ConnectionError:
        ended = "client gone"
    except asyncio.CancelledError:
        ended = "cancelled"  # the client went away (handler cancellation) or a hard stop
        _done(registry, active, gauge, kind, ended, sent, revision, response)
        raise
    await _finish(response, transport, None)
    return _done(registry, active, gauge, kind, ended, sent, revision, response)


async def _finish(
    response: web.StreamResponse,
    transport: asyncio.Transport | None,
    last: bytes | None,
    *,
    drain: bool = False,
) -> bool:
    """Write ``last`` (if any) and end the stream. With ``drain`` (a client that was too
    slow), wait for the client to take the unsent bytes and drop the connection if it does
    not within the timeout, so what it left unread is freed. True if delivered."""
    if drain:
        response.force_close()  # the client relists on a new connection anyway
    try:
        async with asyncio.timeout(_FINAL_WRITE_TIMEOUT):
            if last is not None:
                await response.write(last)
            await response.write_eof()
            # aiohttp waits for the socket only past 64 kB written and asyncio signals only
            # the high-water mark, not "empty": poll (only for a watcher ended as slow).
            while drain and transport is not None and transport.get_write_buffer_size():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return True
    except ConnectionError:
        return False
    except TimeoutError:
        if transport is not None:
            transport.abort()
        return False


def _done(
    registry: WatchRegistry,
    active: _ActiveWatch,
    gauge: Any,
    kind: ResourceKind | RecordKind,
    ended: str,
    sent: int,
    revision: int,
    response: web.StreamResponse,
) -> web.StreamResponse:
    registry.discard(active)
    gauge.dec()
    log.info("watch.ended", kind=kind.kind, reason=ended, events=sent, resource_version=revision)
    return response
