"""The project phase machine, enforced on the server for every status write.

The original accepted any transition from any phase, so an agent's late ``Running`` could
undo a user's delete (REFERENCE §10.9). Here a write that is not an allowed edge is a 409.
"""

from __future__ import annotations

from caravanserai.api.problems import Conflict
from caravanserai.api.project import ProjectPhase as P

ALLOWED_TRANSITIONS: dict[P, frozenset[P]] = {
    P.PENDING: frozenset({P.SCHEDULED, P.TERMINATING}),
    # Back to Pending: the rescheduler moves work off a NotReady node.
    P.SCHEDULED: frozenset({P.RUNNING, P.FAILED, P.PENDING, P.TERMINATING}),
    P.RUNNING: frozenset({P.FAILED, P.PENDING, P.TERMINATING}),
    # A spec update redeploys a Failed project (Scheduled on its node, or Pending without one).
    P.FAILED: frozenset({P.PENDING, P.SCHEDULED, P.RUNNING, P.TERMINATING}),
    # Nothing turns a deletion back: only the agent's (or the timeout's) Terminated.
    P.TERMINATING: frozenset({P.TERMINATED}),
    P.TERMINATED: frozenset(),
}


def can_transition(old: P | None, new: P) -> bool:
    """True when a project may move from ``old`` to ``new`` (staying put is always allowed)."""
    if old is None or old == new:
        return True
    return new in ALLOWED_TRANSITIONS[old]


def check_transition(name: str, old: P | None, new: P) -> None:
    """Raise Conflict unless ``old`` → ``new`` is an edge of the phase machine."""
    if not can_transition(old, new):
        raise Conflict(f'project "{name}" cannot move from phase {old} to {new}')
