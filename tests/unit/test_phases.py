"""The project phase machine: exactly the allowed edges, nothing else."""

from __future__ import annotations

import itertools

import pytest

from caravanserai.api import Conflict, ProjectPhase
from caravanserai.api.phases import ALLOWED_TRANSITIONS, can_transition, check_transition

P = ProjectPhase

# Written out independently of phases.py: a change to the machine must change this table.
ALLOWED: set[tuple[P, P]] = {
    (P.PENDING, P.SCHEDULED),  # scheduler
    (P.PENDING, P.TERMINATING),  # delete
    (P.SCHEDULED, P.RUNNING),  # agent
    (P.SCHEDULED, P.FAILED),  # agent
    (P.SCHEDULED, P.PENDING),  # rescheduler: node NotReady
    (P.SCHEDULED, P.TERMINATING),
    (P.RUNNING, P.FAILED),
    (P.RUNNING, P.PENDING),  # rescheduler
    (P.RUNNING, P.TERMINATING),
    (P.FAILED, P.PENDING),  # spec update redeploys
    (P.FAILED, P.SCHEDULED),
    (P.FAILED, P.RUNNING),
    (P.FAILED, P.TERMINATING),
    (P.TERMINATING, P.TERMINATED),  # agent, or the force-termination timeout
}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(P, P)), ids=lambda p: str(p))
def test_transition_matrix(old: P, new: P) -> None:
    expected = old == new or (old, new) in ALLOWED
    assert can_transition(old, new) is expected
    if expected:
        check_transition("demo", old, new)
    else:
        with pytest.raises(Conflict) as info:
            check_transition("demo", old, new)
        assert info.value.status == 409
        assert info.value.detail == f'project "demo" cannot move from phase {old} to {new}'


def test_nothing_undoes_a_delete() -> None:
    # REFERENCE §10.9: an agent's late Running must not undo a user's delete.
    for new in (P.RUNNING, P.PENDING, P.SCHEDULED, P.FAILED):
        assert not can_transition(P.TERMINATING, new)
    with pytest.raises(Conflict, match="from phase Terminating to Running"):
        check_transition("web", P.TERMINATING, P.RUNNING)


def test_terminated_is_final() -> None:
    assert all(not can_transition(P.TERMINATED, new) for new in P if new != P.TERMINATED)
    assert ALLOWED_TRANSITIONS[P.TERMINATED] == frozenset()


def test_every_phase_can_be_deleted() -> None:
    for old in (P.PENDING, P.SCHEDULED, P.RUNNING, P.FAILED):
        assert can_transition(old, P.TERMINATING)


@pytest.mark.parametrize("new", list(P))
def test_no_previous_phase_allows_anything(new: P) -> None:
    # A project without a phase yet (just created) may be given any phase.
    assert can_transition(None, new)
    check_transition("demo", None, new)


def test_table_covers_every_phase() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(P)
