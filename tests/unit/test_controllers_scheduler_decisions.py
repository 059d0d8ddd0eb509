"""The scheduler's pure decisions: what needs placing, what is written, which events wake
whom."""

from __future__ import annotations

from typing import Any

from test_controllers_support import node, project  # type: ignore[import-not-found]

from caravanserai.api.base import get_condition
from caravanserai.api.node import NodeState
from caravanserai.api.project import CONDITION_SCHEDULED, ProjectPhase
from caravanserai.informer import Change, DeltaType
from controllers.scheduler import (
    became_schedulable,
    binding_for,
    frees_a_node,
    needs_placement,
    unschedulable_status,
)


def change(old: Any, new: Any) -> Change[Any]:
    kind = (
        DeltaType.ADDED if old is None else DeltaType.DELETED if new is None else DeltaType.UPDATED
    )
    return Change(kind, old, new)


def test_only_a_pending_project_without_our_write_for_its_version_needs_placement() -> None:
    pending = project("p", rv=7)
    assert needs_placement(pending, None)
    assert not needs_placement(pending, ("a", 7))  # our binding of rv 7 is on its way
    assert needs_placement(pending, ("a", 5))  # changed since: look again
    assert not needs_placement(project("p", ProjectPhase.RUNNING, "a"), None)
    assert not needs_placement(None, None)


def test_the_binding_is_conditioned_on_the_version_decided_on() -> None:
    b = binding_for(project("p", rv=9), "n1")
    assert (b.name, b.node, b.resource_version, b.reason) == ("p", "n1", "9", "Scheduled")


def test_the_unschedulable_condition_is_written_once_per_reason() -> None:
    p = project("p")
    body = unschedulable_status(p, "0/1 nodes fit: 1 cordoned")
    assert body is not None and p.status.conditions == []  # the cached object is untouched
    cond = get_condition(body.status.conditions, CONDITION_SCHEDULED)
    assert cond is not None
    assert (cond.status.value, cond.reason) == ("False", "Unschedulable")
    assert unschedulable_status(body, "0/1 nodes fit: 1 cordoned") is None
    assert unschedulable_status(body, "0/2 nodes fit: 2 not ready") is not None


def test_a_node_wakes_waiting_projects_when_it_gains_room() -> None:
    ready, not_ready = node("a", rv=2), node("a", NodeState.NOT_READY)
    assert became_schedulable(change(None, ready))
    assert became_schedulable(change(not_ready, ready))
    assert became_schedulable(change(node("a", unschedulable=True), ready))  # uncordoned
    assert not became_schedulable(change(node("a"), ready))  # a heartbeat
    assert not became_schedulable(change(ready, not_ready))
    assert not became_schedulable(change(ready, None))
    grown = ready.model_copy(deep=True)
    grown.status.allocatable = {"cpu": "8"}
    assert became_schedulable(change(ready, grown))


def test_room_is_freed_when_a_project_stops_counting_on_its_node() -> None:
    running = project("p", ProjectPhase.RUNNING, "a")
    assert frees_a_node(change(running, None))
    assert frees_a_node(change(running, project("p", ProjectPhase.TERMINATED, "a")))
    assert frees_a_node(change(running, project("p")))  # reset to Pending
    assert not frees_a_node(change(project("p"), project("p", ProjectPhase.SCHEDULED, "a")))
    assert not frees_a_node(change(running, project("p", ProjectPhase.FAILED, "a")))
    assert not frees_a_node(change(None, running))
