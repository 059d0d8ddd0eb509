"""An injectable clock: wall time, monotonic time, sleeps, timers and timeouts.

Everything in the informer library that waits (backoff, ``add_after``, resync, liveness
timeouts) goes through a :class:`Clock`, so tests drive time with :class:`FakeClock` instead
of sleeping, and controllers can compute timers from object timestamps::

    delay = clock.until(project.spec.expire_at)   # seconds from now, never negative
    queue.add_after(name, delay)
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "RealClock", "TimerHandle"]


@runtime_checkable
class TimerHandle(Protocol):
    """A scheduled callback that can be cancelled (``asyncio.TimerHandle`` satisfies it)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Source of time for the library. ``RealClock`` in production, ``FakeClock`` in tests."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (only differences are meaningful)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` (<= 0 just yields to the event loop)."""
        ...

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` on the event loop after ``seconds``; cancellable."""
        ...

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        """Like ``asyncio.timeout``: raise ``TimeoutError`` if the block runs longer."""
        ...

    def until(self, when: datetime) -> float:
        """Seconds from now until ``when`` (0 when it has passed)."""
        ...


class RealClock:
    """The real clock: ``datetime.now(UTC)`` and the running event loop's timers."""

    def now(self) -> datetime:
        """The current wall-clock time (UTC)."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """The event loop's monotonic time."""
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        """``loop.call_later``."""
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        """``asyncio.timeout``."""
        return asyncio.timeout(seconds)

    def until(self, when: datetime) -> float:
        """Seconds until ``when``, never negative."""
        return max(0.0, (when - self.now()).total_seconds())


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "deadline", "seq")

    def __init__(self, deadline: float, seq: int, callback: Callable[[], object]) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: _FakeTimer) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


class _Timeout:
    """``asyncio.timeout`` semantics on top of any clock's ``call_later``."""

    def __init__(self, clock: FakeClock, seconds: float | None) -> None:
        self._clock = clock
        self._seconds = seconds
        self._handle: TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._expired = False
        self._cancelling = 0

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task
            raise RuntimeError("timeout() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self._seconds is not None:
            self._handle = self._clock.call_later(self._seconds, self._expire)

    def _expire(self) -> None:
        assert self._task is not None
        self._expired = True
        self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._handle is not None:
            self._handle.cancel()
        assert self._task is not None
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
        return None


class FakeClock:
    """A clock that only moves when a test says so.

    ``advance(seconds)`` moves time forward, firing due timers in deadline order and letting
    the event loop run the woken tasks in between, so code under test behaves as if that much
    time had passed::

        clock = FakeClock()
        task = asyncio.create_task(clock.sleep(5))
        await clock.advance(5)
        assert task.done()
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._start_wall = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._now = 0.0
        self._timers: list[_FakeTimer] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        """Wall time: the start time plus the virtual seconds elapsed."""
        return self._start_wall + timedelta(seconds=self._now)

    def monotonic(self) -> float:
        """Virtual seconds elapsed since the clock was created."""
        return self._now

    def until(self, when: datetime) -> float:
        """Seconds until ``when``, never negative."""
        return max(0.0, (when - self.now()).total_seconds())

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        """Schedule ``callback`` at virtual time now + ``seconds``."""
        timer = _FakeTimer(self._now + max(0.0, seconds), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, seconds: float) -> None:
        """Sleep in virtual time (returns once ``advance`` passed the deadline)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        handle = self.call_later(seconds, wake)
        try:
            await fut
        finally:
            handle.cancel()

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        """A timeout in virtual time."""
        return _Timeout(self, seconds)

    @property
    def pending_timers(self) -> int:
        """How many timers (sleeps, timeouts, delayed adds) are waiting."""
        return sum(1 for t in self._timers if not t.cancelled)

    def next_deadline(self) -> float | None:
        """Virtual time of the earliest pending timer, or None."""
        self._drop_cancelled()
        return self._timers[0].deadline if self._timers else None

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)

    async def settle(self, rounds: int = 20) -> None:
        """Let the event loop run ready tasks (a few iterations) without moving time."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float = 0.0) -> None:
        """Move time forward by ``seconds``, firing every timer that falls due on the way."""
        target = self._now + max(0.0, seconds)
        await self.settle()
        while True:
            self._drop_cancelled()
            if not self._timers or self._timers[0].deadline > target:
                break
            timer = heapq.heappop(self._timers)
            self._now = max(self._now, timer.deadline)
            timer.callback()
            await self.settle()
        self._now = target
        await self.settle()

    def set_now(self, when: datetime) -> None:
        """Jump the wall clock (not the monotonic one) to ``when`` — for skew tests."""
        self._start_wall = when - timedelta(seconds=self._now)
