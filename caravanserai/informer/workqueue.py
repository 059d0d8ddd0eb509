"""WorkQueue: a de-duplicating FIFO of keys with delays and rate-limited retries.

Semantics of client-go's ``workqueue``:

- a key added several times before a worker takes it is handed out once (*dirty* set);
- a key being processed is never handed to a second worker (*processing* set); if it is
  added meanwhile it is handed out again after ``done(key)``;
- ``add_after(key, delay)`` adds it later (the earliest pending delay wins);
- ``add_rate_limited(key)`` adds it after the rate limiter's delay (per-key exponential
  backoff and an overall rate), ``forget(key)`` resets its backoff;
- ``shut_down()`` stops at once, ``shut_down_with_drain()`` lets the queued keys be
  processed first.

Usage by a worker::

    while True:
        try:
            key = await queue.get()
        except ShutDown:
            return
        try:
            ...
        finally:
            queue.done(key)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge

from caravanserai.informer.clock import Clock, RealClock, TimerHandle
from caravanserai.informer.ratelimit import RateLimiter, default_controller_rate_limiter

__all__ = ["ShutDown", "WorkQueue"]

K = TypeVar("K", bound=Hashable)

DEPTH = Gauge("caravanserai_workqueue_depth", "Keys waiting to be processed", ["name"])
ADDS = Counter("caravanserai_workqueue_adds_total", "Keys added", ["name"])
RETRIES = Counter("caravanserai_workqueue_retries_total", "Rate-limited re-adds", ["name"])
DELAYED = Gauge("caravanserai_workqueue_delayed", "Keys waiting for add_after", ["name"])


class ShutDown(Exception):
    """Raised by ``get()`` once the queue is shut down (and drained, if draining)."""


class WorkQueue(Generic[K]):
    """A de-duplicating work queue; see the module documentation.

    Args:
        name: for metrics and logs (e.g. the controller name).
        clock: time source for delays.
        rate_limiter: used by ``add_rate_limited``; default per-key 5 ms → 1000 s and
            10 qps / burst 100 overall.
    """

    def __init__(
        self,
        name: str = "queue",
        *,
        clock: Clock | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.name = name
        self.clock: Clock = clock or RealClock()
        self.rate_limiter: RateLimiter = rate_limiter or default_controller_rate_limiter(
            self.clock
        )
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._waiting: dict[K, tuple[float, TimerHandle]] = {}
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._shutting_down = False
        self._draining = False
        self._depth = DEPTH.labels(name)
        self._adds = ADDS.labels(name)
        self._retries = RETRIES.labels(name)
        self._delayed = DELAYED.labels(name)

    # -- adding ---------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Queue ``key`` unless it is already queued; ignored after shutdown."""
        if self._shutting_down or key in self._dirty:
            return
        self._adds.inc()
        self._dirty.add(key)
        self._idle.clear()
        if key in self._processing:
            return  # handed out again by done()
        self._queue.append(key)
        self._changed()

    def add_after(self, key: K, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (at once if <= 0).

        If the key is already waiting, the earlier of the two times is kept.
        """
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        due = self.clock.monotonic() + delay
        existing = self._waiting.get(key)
        if existing is not None:
            if existing[0] <= due:
                return
            existing[1].cancel()
        handle = self.clock.call_later(delay, lambda: self._fire(key, due))
        self._waiting[key] = (due, handle)
        self._idle.clear()
        self._delayed.set(len(self._waiting))

    def _fire(self, key: K, due: float) -> None:
        entry = self._waiting.get(key)
        if entry is None or entry[0] != due:
            return
        del self._waiting[key]
        self._delayed.set(len(self._waiting))
        self.add(key)
        self._check_idle()

    def add_rate_limited(self, key: K) -> None:
        """Queue ``key`` after its rate-limited backoff (a failed attempt)."""
        if self._shutting_down:
            return
        self._retries.inc()
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: K) -> None:
        """Reset ``key``'s backoff (it was processed successfully). Does not dequeue it."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        """How many rate-limited re-adds ``key`` had since it was last forgotten."""
        return self.rate_limiter.num_requeues(key)

    # -- taking ---------------------------------------------------------------------------

    async def get(self) -> K:
        """Wait for a key and mark it processing. Raises :class:`ShutDown` when shut down.

        Cancellation-safe: a cancelled ``get`` takes nothing off the queue.
        """
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(self.name)
            self._ready.clear()
            await self._ready.wait()
        if self._shutting_down and not self._draining:
            raise ShutDown(self.name)
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        self._depth.set(len(self._queue))
        return key

    def done(self, key: K) -> None:
        """Mark ``key`` processed; if it was added meanwhile it is queued again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._changed()
        self._check_idle()

    # -- shutting down --------------------------------------------------------------------

    def shut_down(self) -> None:
        """Stop now: ignore new adds, drop queued and delayed keys, wake every ``get``."""
        self._shutting_down = True
        self._draining = False
        self._cancel_delayed()
        self._queue.clear()
        self._dirty.clear()
        self._depth.set(0)
        self._ready.set()
        self._check_idle()

    async def shut_down_with_drain(self) -> None:
        """Ignore new adds, let workers finish the queued keys, and wait for it."""
        self._shutting_down = True
        self._draining = True
        self._cancel_delayed()
        self._ready.set()
        self._check_idle()
        await self._idle.wait()

    def _cancel_delayed(self) -> None:
        for _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        self._delayed.set(0)

    @property
    def shutting_down(self) -> bool:
        """True after ``shut_down`` or ``shut_down_with_drain``."""
        return self._shutting_down

    # -- introspection --------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys queued (not processing, not delayed)."""
        return len(self._queue)

    @property
    def processing(self) -> frozenset[K]:
        """Keys handed out and not yet ``done``."""
        return frozenset(self._processing)

    @property
    def delayed(self) -> int:
        """Keys waiting for ``add_after``."""
        return len(self._waiting)

    def is_idle(self) -> bool:
        """Nothing queued, processing or delayed."""
        return not (self._queue or self._processing or self._waiting)

    async def wait_idle(self) -> None:
        """Wait until nothing is queued, processing or delayed (handy in tests)."""
        await self._idle.wait()

    def _changed(self) -> None:
        self._depth.set(len(self._queue))
        self._ready.set()

    def _check_idle(self) -> None:
        if not (self._queue or self._processing or self._waiting):
            self._idle.set()
