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


# -- named phase sets: the one definition of each, used by the server, controllers and agent --

OCCUPYING_PHASES: frozenset[P] = frozenset({P.SCHEDULED, P.RUNNING, P.FAILED, P.TERMINATING})
"""A project in one of these phases holds its node: the scheduler counts it as that node's
load, and the node cannot be deleted without ``?force``. Failed is included: its containers
may still exist on the node (a crash-looping service) and a spec change redeploys it in
place; Terminating is not torn down yet."""

NODE_BOUND_PHASES: frozenset[P] = frozenset({P.SCHEDULED, P.RUNNING})
"""Phases that need a ``status.nodeRef`` (the phase machine refuses them without one), and
the phases the rescheduler moves off a NotReady node."""

DEPLOYED_PHASES: frozenset[P] = frozenset({P.SCHEDULED, P.RUNNING, P.FAILED})
"""Phases whose containers the node's agent keeps deployed (and a drain moves off)."""

DELETING_PHASES: frozenset[P] = frozenset({P.TERMINATING, P.TERMINATED})
"""A project being deleted: its spec can no longer change."""
