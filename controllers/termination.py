"""termination: finish deletions.

* A **Terminated** project (its agent removed everything) is deleted from the store, as
  ``DELETE /api/v1/projects/{name}`` does for a project that no longer holds a node.
* A **Terminating** project whose node is gone (NotReady, missing, or Draining with a
  silent agent — :func:`controllers.node_health.node_available`) has no agent to tear it
  down. A ``TerminatingAt`` condition is written once, when this is first seen; its
  ``lastTransitionTime`` starts the force-termination timeout (default 10 m). A timer fires
  at the end; if the node is still gone the project is forced to ``Terminated`` with reason
  ``TerminationTimeout`` and the original's message, and is then deleted as above.
* ``TerminatingAt`` is cleared when the node comes back before the deadline: its agent
  tears the project down normally.

Writes carry the project's resourceVersion; a 409 (the agent reported Terminated
meanwhile, say) means "look again".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from caravanserai.api.base import get_condition
from caravanserai.api.node import Node
from caravanserai.api.phases import DELETING_PHASES
from caravanserai.api.project import CONDITION_TERMINATING_AT, Project, ProjectPhase
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
    "MESSAGE_TERMINATION_TIMEOUT",
    "REASON_NODE_NOT_READY",
    "REASON_TERMINATION_TIMEOUT",
    "Action",
    "Plan",
    "Termination",
    "controller",
    "plan",
]

REASON_TERMINATION_TIMEOUT = "TerminationTimeout"
REASON_NODE_NOT_READY = "NodeNotReady"
MESSAGE_TERMINATION_TIMEOUT = (
    "Node was NotReady for too long; project force-terminated. "
    "Docker resources on the node may need manual cleanup."
)
NODE_REF_INDEX = "nodeRef"


class Action(StrEnum):
    """What :func:`plan` asks the reconciler to do."""

    NOTHING = "Nothing"
    REMOVE = "Remove"  # delete the Terminated record
    MARK = "Mark"  # write TerminatingAt (the timeout starts)
    CLEAR = "Clear"  # remove TerminatingAt
    FORCE = "Force"  # Terminating → Terminated


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one project, and when to look at it again."""

    action: Action
    requeue_after: float | None = None


def plan(project: Project, node: Node | None, now: datetime, timeout: float) -> Plan:
    """Decide what to do with one project given its node (None: missing), pure."""
    phase = project.status.phase
    mark = get_condition(project.status.conditions, CONDITION_TERMINATING_AT)
    if phase is ProjectPhase.TERMINATED:
        return Plan(Action.REMOVE)
    if phase is not ProjectPhase.TERMINATING:
        return Plan(Action.NOTHING)
    if node_available(node):
        return Plan(Action.CLEAR if mark is not None else Action.NOTHING)
    left = time_left(mark, timeout, now)
    if left is None:
        return Plan(Action.MARK, requeue_after=timeout)
    return Plan(Action.NOTHING, requeue_after=left) if left > 0 else Plan(Action.FORCE)


class Termination(ProjectClockReconciler[Plan]):
    """The reconciler: apply :func:`plan` to one project (``seconds``: the timeout)."""

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
        """Remove, force or keep waiting for the project."""
        name = project.metadata.name
        if decision.action is Action.REMOVE:
            # The same request as `caractrl delete`: a Terminated project holds no node,
            # so the server removes it at once.
            await self.client.projects.delete(name)
            self.log.info("project.removed", kind="Project", name=name, node=node_name)
        elif decision.action is Action.FORCE:
            await self.client.projects.patch_status(
                name,
                ProjectPhase.TERMINATED,
                REASON_TERMINATION_TIMEOUT,
                MESSAGE_TERMINATION_TIMEOUT,
                resource_version=project.metadata.resource_version,
            )
            self.log.warning(
                "project.force_terminated",
                kind="Project",
                name=name,
                node=node_name,
                timeout=self.seconds,
                why=describe_absence(node_name, node),
            )
        elif decision.action is Action.MARK:
            await start_clock(
                self.client,
                project,
                CONDITION_TERMINATING_AT,
                REASON_NODE_NOT_READY,
                f"{describe_absence(node_name, node).capitalize()}; the "
                "project is force-terminated unless it recovers within "
                f"{format_duration(self.seconds)}",
                now,
            )
            self.log.info(
                "project.termination_timer_started", kind="Project", name=name, node=node_name
            )
        elif decision.action is Action.CLEAR:
            await stop_clock(self.client, project, CONDITION_TERMINATING_AT)
            self.log.info(
                "project.termination_timer_cleared", kind="Project", name=name, node=node_name
            )


@predicate
def finishing(change: Change[Project]) -> bool:
    """Projects being deleted: Terminating or Terminated."""
    return change.object.status.phase in DELETING_PHASES


def terminating_on(change: Change[Node]) -> list[str]:
    """The Terminating projects on the changed node."""
    assert change.primary is not None
    return [
        name
        for name in by_index(NODE_REF_INDEX)(change)
        if (p := change.primary.get(name)) is not None
        and p.status.phase is ProjectPhase.TERMINATING
    ]


def controller(ctx: ControllerContext) -> RunnableController:
    """Entry point ``termination``."""
    settings = load_settings(ctx.name, ctx.config)
    return (
        Controller.for_(Project, indexers={NODE_REF_INDEX: index_by_node_ref}, predicate=finishing)
        .watches(Node, map_to=terminating_on, predicate=availability_changed)
        .workers(settings.workers)
        .complete(
            lambda c: Termination(
                c.client,
                c.informers.projects(indexers={NODE_REF_INDEX: index_by_node_ref}),
                c.informers.nodes(),
                c.clock,
                settings.terminating_timeout,
                c.log,
            )
        )
        .build(ctx)
    )
