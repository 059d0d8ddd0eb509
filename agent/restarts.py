"""Restart policies with CrashLoopBackOff: which exited containers to restart, and when.

Compose names the policies; Kubernetes gives the timing: the n-th consecutive restart waits
``base * 2**(n-1)`` (10 s, 20 s, 40 s, ... capped at 5 min), and a container that ran for
``reset_after`` (10 min) before it exited starts the sequence again. Decisions are pure
functions of the policy, the exit and the injected clock; the reconciler does the starting.

The tracker lives in the agent's memory: after an agent restart the count is taken back from
the project's status, and the backoff starts again from ``base`` (never shorter).
"""

from __future__ import annotations

from dataclasses import dataclass

from caravanserai.api.project import RestartPolicy
from caravanserai.informer.clock import Clock

REASON_BACKOFF = "CrashLoopBackOff"


def wants_restart(policy: RestartPolicy, exit_code: int | None) -> bool:
    """Whether ``policy`` restarts a container that exited with ``exit_code``.

    ``unless-stopped`` behaves as ``always``: the agent never stops a service on its own
    except to remove it, which no policy undoes.
    """
    if policy in (RestartPolicy.ALWAYS, RestartPolicy.UNLESS_STOPPED):
        return True
    if policy is RestartPolicy.ON_FAILURE:
        return exit_code != 0
    return False


def backoff_delay(consecutive: int, base: float, cap: float) -> float:
    """The wait before the ``consecutive``-th restart in a row (1-based)."""
    return min(cap, base * 2 ** max(0, consecutive - 1))


@dataclass
class _State:
    count: int  # restarts done (reported as restartCount)
    consecutive: int = 0  # crashes since the last reset
    started_at: float | None = None  # clock time of the agent's last start
    exit_id: str | None = None  # the exit being waited out (container id + exit marker)
    next_at: float | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class BackOff:
    """A service waiting out its backoff."""

    service: str
    remaining: float
    delay: float
    exit_code: int | None

    @property
    def message(self) -> str:
        return (
            f"back-off {self.delay:g}s restarting failed service {self.service} "
            f"(exit code {self.exit_code})"
        )


class RestartTracker:
    """Per (project uid, service): restart count and the backoff of the current exit."""

    def __init__(
        self, clock: Clock, *, base: float = 10.0, cap: float = 300.0, reset_after: float = 600.0
    ) -> None:
        self.clock = clock
        self.base = base
        self.cap = cap
        self.reset_after = reset_after
        self._states: dict[tuple[str, str], _State] = {}

    def _state(self, key: tuple[str, str], reported: int) -> _State:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State(count=reported)
        return state

    def count(self, project_uid: str, service: str, reported: int = 0) -> int:
        state = self._states.get((project_uid, service))
        return state.count if state is not None else reported

    def started(self, project_uid: str, service: str) -> None:
        """A fresh container was started (created, or a rollout): no backoff pending."""
        state = self._state((project_uid, service), 0)
        state.started_at = self.clock.monotonic()
        state.exit_id = None
        state.next_at = None

    def on_exit(
        self, project_uid: str, service: str, exit_id: str, exit_code: int | None,
        reported: int = 0,
    ) -> BackOff | None:
        """The container exited (``exit_id`` names this exit). Returns the backoff still to
        wait, or None when the restart is due now (the caller starts it and calls
        ``restarted``)."""
        now = self.clock.monotonic()
        state = self._state((project_uid, service), reported)
        if state.exit_id != exit_id:
            ran = None if state.started_at is None else now - state.started_at
            if ran is not None and ran >= self.reset_after:
                state.consecutive = 0
            state.consecutive += 1
            delay = backoff_delay(state.consecutive, self.base, self.cap)
            state.exit_id = exit_id
            state.exit_code = exit_code
            state.next_at = now + delay
        assert state.next_at is not None
        remaining = state.next_at - now
        if remaining <= 0:
            return None
        delay = backoff_delay(state.consecutive, self.base, self.cap)
        return BackOff(service, remaining, delay, exit_code)

    def restarted(self, project_uid: str, service: str) -> int:
        """The agent restarted the container after its backoff; returns the new count."""
        state = self._state((project_uid, service), 0)
        state.count += 1
        state.started_at = self.clock.monotonic()
        state.exit_id = None
        state.next_at = None
        return state.count

    def forget(self, project_uid: str) -> None:
        for key in [k for k in self._states if k[0] == project_uid]:
            del self._states[key]
