"""rescheduler: projects on a node that is gone go back to Pending, to be scheduled elsewhere.

A node is gone when :func:`controllers.node_health.node_available` says so: NotReady,
deleted (a ``nodeRef`` naming a node that does not exist, REFERENCE §10.17), or Draining
with a silent agent.

* **Scheduled** there → Pending at once (its containers were never confirmed running).
* **Running** there → a ``NotReadyAt`` condition is written once, when this is first seen;
  its ``lastTransitionTime`` starts the grace period (default 3 m). A timer fires at the
  end of it; if the node is still gone the project goes Pending.
* The ``Phase`` condition of the reset says ``NodeNotReady`` (with the original's message).
  Entering Pending clears ``nodeRef``, ``NotReadyAt`` and ``TerminatingAt`` on the server.
* ``NotReadyAt`` is **cleared** when the node comes back before the deadline and whenever
  the project is no longer Running or Scheduled (it moved). The original never cleared it,
  so a project rescheduled once would later be moved off its next node with no grace at all
  (REFERENCE §10.10).

Every write carries the project's resourceVersion: a project that changed meanwhile (the
agent reported Running, a user deleted it) is a 409 and is looked at again, so a reset
never overwrites a newer state (REFERENCE §10.13).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from caravanserai.api.base import get_condition
from caravanserai.api.node import Node
from caravanserai.api.phases import NODE_BOUND_PHASES
from caravanserai.api.project import CONDITION_NOT_READY_AT, Project, ProjectPhase
from caravanserai.informer import (
    Change,
    Controller,
    ControllerContext,
    RunnableController,
    by_index,
    index_by_node_ref,
    predicate,
)
from controllers.condition_clock import ProjectClockReconciler, start_clock, stop_clock, time_left
from controllers.node_health import availability_changed, describe_absence, node_available
from controllers.settings import format_duration, load_settings

__all__ = [
    "MESSAGE_RESET",
    "REASON_NODE_NOT_READY",
    "Action",
    "Plan",
    "Rescheduler",
    "controller",
    "plan",
]

REASON_NODE_NOT_READY = "NodeNotReady"
MESSAGE_RESET = "Node went NotReady; project reset to Pending for rescheduling"
NODE_REF_INDEX = "nodeRef"
_ON_NODE = NODE_BOUND_PHASES


class Action(StrEnum):
    """What :func:`plan` asks the reconciler to do."""

    NOTHING = "Nothing"
    MARK = "Mark"  # write NotReadyAt (the grace period starts)
    CLEAR = "Clear"  # remove NotReadyAt
    RESET = "Reset"  # back to Pending


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one project, and when to look at it again."""

    action: Action
    requeue_after: float | None = None


def plan(project: Project, node: Node | None, now: datetime, grace: float) -> Plan:
    """Decide what to do with one project given its node (None: missing), pure."""
    phase = project.status.phase
    mark = get_condition(project.status.conditions, CONDITION_NOT_READY_AT)
    if phase not in _ON_NODE:
        return Plan(Action.CLEAR if mark is not None else Action.NOTHING)
    if node_available(node):
        return Plan(Action.CLEAR if mark is not None else Action.NOTHING)
    if phase is ProjectPhase.SCHEDULED:
        return Plan(Action.RESET)
    left = time_left(mark, grace, now)
    if left is None:
        return Plan(Action.MARK, requeue_after=grace)
    return Plan(Action.NOTHING, requeue_after=left) if left > 0 else Plan(Action.RESET)


class Rescheduler(ProjectClockReconciler[Plan]):
    """The reconciler: apply :func:`plan` to one project (``seconds``: the grace period)."""

    def plan(self, project: Project, node: Node | None, now: datetime) -> Plan:
        return plan(project, node, now, self.seconds)

    async def apply(
        self,
        decision: Plan,
        project: Project,
        node_name: str | None,
        node: Node | None,
        now: datetime,
    ) -> None:
        """Move the project off a node that is gone, or start or clear its grace clock."""
        name = project.metadata.name
        if decision.action is Action.RESET:
            message = MESSAGE_RESET
            if node is None:
                message = (
                    f"Node {node_name} no longer exists; project reset to Pending for rescheduling"
                )
            await self.client.projects.patch_status(
                name,
                ProjectPhase.PENDING,
                REASON_NODE_NOT_READY,
                message,
                resource_version=project.metadata.resource_version,
            )
            self.log.info(
                "project.rescheduled",
                kind="Project",
                name=name,
                node=node_name,
                phase=str(project.status.phase),
                why=describe_absence(node_name, node),
            )
        elif decision.action is Action.MARK:
            await start_clock(
                self.client,
                project,
                CONDITION_NOT_READY_AT,
                REASON_NODE_NOT_READY,
                f"{describe_absence(node_name, node).capitalize()}; the project "
                f"moves to another node unless it recovers within "
                f"{format_duration(self.seconds)}",
                now,
            )
            self.log.info(
                "project.grace_started",
                kind="Project",
                name=name,
                node=node_name,
                grace=self.seconds,
            )
        elif decision.action is Action.CLEAR:
            await stop_clock(self.client, project, CONDITION_NOT_READY_AT)
            self.log.info(
                "project.grace_cleared",
                kind="Project",
                name=name,
                node=node_name,
                phase=str(project.status.phase),
            )


@predicate
def concerns(change: Change[Project]) -> bool:
    """Projects on a node, and those whose NotReadyAt clock must be cleared."""
    project = change.object
    return project.status.phase in _ON_NODE or (
        get_condition(project.status.conditions, CONDITION_NOT_READY_AT) is not None
    )


def controller(ctx: ControllerContext) -> RunnableController:
    """Entry point ``rescheduler``: a project's node changing availability wakes it."""
    settings = load_settings(ctx.name, ctx.config)
    indexers = {NODE_REF_INDEX: index_by_node_ref}
    return (
        Controller.for_(Project, indexers=indexers, predicate=concerns)
        .watches(Node, map_to=by_index(NODE_REF_INDEX), predicate=availability_changed)
        .workers(settings.workers)
        .complete(
            lambda c: Rescheduler(
                c.client,
                c.informers.projects(indexers=indexers),
                c.informers.nodes(),
                c.clock,
                settings.running_grace,
                c.log,
            )
        )
        .build(ctx)
    )
