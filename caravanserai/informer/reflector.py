"""The reflector keeps a :class:`Cache` equal to the server's objects, forever.

It lists, then watches from the list's revision, applying every event to the cache and
reporting each change as a :class:`Delta`:

- a stream that ends or breaks is resumed from the last revision seen (events or
  bookmarks) — no relist, no missed or duplicated event;
- ``410 Gone`` (the revision left the event log, or the server ended a watcher that fell
  too far behind) and ``504`` "too large resource version" (the server has not reached
  the revision, e.g. after a database failover) trigger a relist whose *difference* with
  the cache is delivered as adds, updates and deletes, so handlers never miss a delete;
- errors back off exponentially with jitter (0.8 s doubling to 30 s by default);
- a stream silent for longer than ``liveness_timeout`` (no event, no bookmark) is dropped
  and resumed: streams that go quiet without closing are detected.

Nothing of this escapes to the user: ``run()`` only ends by cancellation.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog
from prometheus_client import Counter

from caravanserai.api.event import Event
from caravanserai.api.node import Node
from caravanserai.api.problems import Expired, TooLargeResourceVersion
from caravanserai.api.project import Project
from caravanserai.api.watch import EventType
from caravanserai.client.watch import WatchEvent
from caravanserai.informer.backoff import Backoff
from caravanserai.informer.cache import Cache, Delta, DeltaType
from caravanserai.informer.clock import Clock, RealClock
from caravanserai.informer.listerwatcher import ListerWatcher

__all__ = ["Reflector", "StreamStalled"]

T = TypeVar("T", bound=Project | Node | Event)

log = structlog.get_logger("caravanserai.informer.reflector")

LISTS = Counter("caravanserai_reflector_lists_total", "Full lists made by reflectors", ["kind"])
WATCHES = Counter("caravanserai_reflector_watches_total", "Watch streams opened", ["kind"])
WATCH_ERRORS = Counter(
    "caravanserai_reflector_errors_total", "List/watch failures by reason", ["kind", "reason"]
)


class StreamStalled(Exception):
    """A watch stream delivered nothing (not even a bookmark) within the liveness timeout."""


def _rv_int(rv: str | None) -> int | None:
    try:
        return int(rv) if rv else None
    except ValueError:
        return None


class Reflector(Generic[T]):
    """List + watch one ListerWatcher into one Cache; report changes to ``on_deltas``.

    Args:
        lw: where objects come from.
        cache: the cache to keep up to date.
        on_deltas: called synchronously with the changes of each list or event.
        on_synced: called once, after the first list's changes were reported.
        clock: time source (``FakeClock`` in tests).
        backoff: delays between failed attempts (default 0.8 s → 30 s, jittered).
        liveness_timeout: seconds without any event or bookmark before the stream is
            considered dead and resumed. Must exceed the server's bookmark interval.
        min_watch_timeout: each watch asks the server to end it after a random time between
            this and twice this (client-go: 5-10 min), spreading reconnects.
    """

    def __init__(
        self,
        lw: ListerWatcher[T],
        cache: Cache[T],
        *,
        on_deltas: Callable[[list[Delta[T]]], None] | None = None,
        on_synced: Callable[[], None] | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        liveness_timeout: float = 90.0,
        min_watch_timeout: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        self.lw = lw
        self.cache = cache
        self._on_deltas = on_deltas
        self._on_synced = on_synced
        self.clock: Clock = clock or RealClock()
        self.backoff = backoff or Backoff(rng=rng)
        self.liveness_timeout = liveness_timeout
        self.min_watch_timeout = min_watch_timeout
        self._rng = rng or random.Random()
        self.kind = lw.model.__name__
        self._log = log.bind(kind=self.kind, source=lw.description)
        self.synced = asyncio.Event()
        """Set once the first list has been applied."""
        self.list_count = 0
        """How many full lists were made (1 + one per 410)."""
        self.watch_count = 0
        """How many watch streams were opened."""
        self.resource_version = ""
        """The last revision seen (list, event or bookmark): where a watch resumes."""

    async def run(self) -> None:
        """List and watch until cancelled. Never raises anything else."""
        need_list = True
        while True:
            delay = 0.0
            listed_now = False
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    listed_now = True
                if await self._watch():
                    self.backoff.reset()
                else:
                    # Ended cleanly without delivering anything: do not spin.
                    delay = self.backoff.next()
            except asyncio.CancelledError:
                raise
            except (Expired, TooLargeResourceVersion) as exc:
                # Too large: the server waited for our revision and has not reached it
                # (after a database failover it never will): a fresh list is the truth.
                reason = "expired" if isinstance(exc, Expired) else "too_large"
                WATCH_ERRORS.labels(self.kind, reason).inc()
                self._log.info(
                    "revision expired, relisting" if reason == "expired"
                    else "revision ahead of the server, relisting",
                    resource_version=self.resource_version,
                )
                need_list = True
                # Relist at once, unless a fresh list's revision expired straight away.
                delay = self.backoff.next() if listed_now else 0.0
            except StreamStalled:
                WATCH_ERRORS.labels(self.kind, "stalled").inc()
                self._log.warning(
                    "watch stream silent, resuming",
                    timeout=self.liveness_timeout,
                    resource_version=self.resource_version,
                )
                delay = self.backoff.next()
            except Exception as exc:
                WATCH_ERRORS.labels(self.kind, type(exc).__name__).inc()
                delay = self.backoff.next()
                self._log.warning(
                    "list failed" if need_list else "watch failed",
                    error=str(exc) or type(exc).__name__,
                    retry_in=round(delay, 3),
                    resource_version=self.resource_version,
                )
            if delay > 0:
                await self.clock.sleep(delay)

    async def _list(self) -> None:
        LISTS.labels(self.kind).inc()
        self.list_count += 1
        result = await self.lw.list()
        deltas = self.cache.replace(result.items, result.resource_version)
        self.resource_version = result.resource_version
        self._log.debug(
            "listed",
            items=len(result.items),
            changes=len(deltas),
            resource_version=result.resource_version,
        )
        self._emit(deltas)
        if not self.synced.is_set():
            self.synced.set()
            if self._on_synced is not None:
                self._on_synced()

    async def _watch(self) -> bool:
        """One watch stream, to its end. True when it delivered anything (progress)."""
        WATCHES.labels(self.kind).inc()
        self.watch_count += 1
        timeout = int(self.min_watch_timeout * (1 + self._rng.random()))
        stream = self.lw.watch(self.resource_version, timeout_seconds=timeout)
        progressed = False
        try:
            while True:
                try:
                    async with self.clock.timeout(self.liveness_timeout):
                        event = await anext(stream)
                except StopAsyncIteration:
                    return progressed
                except TimeoutError as exc:
                    raise StreamStalled(str(exc)) from exc
                if event.type is EventType.ERROR:
                    raise event.error or RuntimeError("watch error event without an error")
                progressed = True
                self._handle(event)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as exc:  # a broken stream may fail to close: irrelevant
                    self._log.debug("closing watch stream failed", error=str(exc))

    def _handle(self, event: WatchEvent[T]) -> None:
        rv = event.resource_version
        current = _rv_int(self.resource_version)
        new = _rv_int(rv)
        if current is not None and new is not None and new <= current:
            if event.type is not EventType.BOOKMARK:
                self._log.warning(
                    "dropping duplicate or out-of-order event",
                    type=str(event.type),
                    name=event.name,
                    resource_version=rv,
                    seen=self.resource_version,
                )
            return
        if event.type is EventType.BOOKMARK:
            self._set_rv(rv)
            return
        obj = event.object
        assert obj is not None
        name = obj.metadata.name
        delta: Delta[T] | None = None
        if event.type is EventType.DELETED:
            old = self.cache.delete(name)
            if old is not None:
                delta = Delta(DeltaType.DELETED, old, obj)
        else:
            old = self.cache.upsert(obj)
            delta = Delta(DeltaType.ADDED if old is None else DeltaType.UPDATED, old, obj)
        self._set_rv(rv or obj.metadata.resource_version or self.resource_version)
        if delta is not None:
            self._log.debug("event", type=str(event.type), name=name, resource_version=rv)
            self._emit([delta])

    def _set_rv(self, rv: str) -> None:
        if rv:
            self.resource_version = rv
            self.cache.resource_version = rv

    def _emit(self, deltas: list[Delta[T]]) -> None:
        if deltas and self._on_deltas is not None:
            self._on_deltas(deltas)
