"""Rate limiters for the work queue (client-go's ``workqueue`` rate limiters).

The default for controllers, :func:`default_controller_rate_limiter`, is the maximum of a
per-item exponential backoff (5 ms doubling to 1000 s) and an overall token bucket
(10 per second, burst 100): a failing key backs off on its own, and a storm of failures
cannot requeue more than ~10 keys a second in total.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from caravanserai.informer.clock import Clock, RealClock

__all__ = [
    "BucketRateLimiter",
    "ItemExponentialRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "default_controller_rate_limiter",
]


class RateLimiter(Protocol):
    """Decides how long an item waits before it is retried."""

    def when(self, item: Hashable) -> float:
        """Seconds to wait before retrying ``item`` (counts one more retry)."""
        ...

    def forget(self, item: Hashable) -> None:
        """Stop tracking ``item`` (it succeeded): its next failure starts from scratch."""
        ...

    def num_requeues(self, item: Hashable) -> int:
        """How many times ``item`` was retried since it was last forgotten."""
        ...


class ItemExponentialRateLimiter:
    """Per-item ``base * 2**failures``, capped at ``maximum`` (default 5 ms → 1000 s)."""

    def __init__(self, base: float = 0.005, maximum: float = 1000.0) -> None:
        self.base = base
        self.maximum = maximum
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        """The item's next backoff."""
        exp = self._failures.get(item, 0)
        self._failures[item] = exp + 1
        if exp >= 64:  # 2**64 * base overflows any sane cap
            return self.maximum
        return min(self.maximum, self.base * (2**exp))

    def forget(self, item: Hashable) -> None:
        """Reset the item's failures."""
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        """The item's failures since it was forgotten."""
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """An overall token bucket: ``qps`` tokens a second, at most ``burst`` saved up.

    Each ``when`` reserves one token and returns how long until that token exists (0 while
    the burst lasts). Items are not tracked: ``forget`` does nothing.
    """

    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Clock | None = None) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._clock: Clock = clock or RealClock()
        self._tokens = float(burst)
        self._last: float | None = None

    def when(self, item: Hashable) -> float:
        """Reserve a token; the wait until it is available."""
        now = self._clock.monotonic()
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, item: Hashable) -> None:
        """Nothing to forget."""

    def num_requeues(self, item: Hashable) -> int:
        """Always 0: the bucket does not track items."""
        return 0


class MaxOfRateLimiter:
    """The longest wait of several limiters (each one is consulted every time)."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("need at least one rate limiter")
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        """The maximum of the limiters' waits."""
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: Hashable) -> None:
        """Forget in every limiter."""
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        """The maximum of the limiters' counts."""
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_rate_limiter(clock: Clock | None = None) -> MaxOfRateLimiter:
    """client-go's default: per-item 5 ms → 1000 s, overall 10 qps with burst 100."""
    return MaxOfRateLimiter(
        ItemExponentialRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100, clock)
    )
