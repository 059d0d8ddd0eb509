"""Jittered exponential backoff (client-go's ``wait.Backoff`` for reconnects)."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays ``initial * factor**n``, capped at ``maximum``, each stretched by a random
    ``[0, jitter)`` fraction (then capped again), so many clients do not reconnect in step.

    Defaults are the reflector's in client-go: 0.8 s doubling to 30 s, jitter 1.0.
    """

    def __init__(
        self,
        initial: float = 0.8,
        maximum: float = 30.0,
        *,
        factor: float = 2.0,
        jitter: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1 or jitter < 0:
            raise ValueError("need 0 < initial <= maximum, factor >= 1, jitter >= 0")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempts = 0
        """Failures since the last ``reset``."""

    def next(self) -> float:
        """The delay before the next attempt (and count one more failure)."""
        base = min(self.maximum, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return min(self.maximum, base * (1.0 + self.jitter * self._rng.random()))

    def reset(self) -> None:
        """Forget past failures: the next delay is ``initial`` again."""
        self.attempts = 0
