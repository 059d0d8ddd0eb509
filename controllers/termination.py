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
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from caravanserai.api.base import Condition, ConditionStatus, get_condition, remove_condition
from caravanserai.api.node import Node
from caravanserai.api.problems import Conflict, NotFound
from caravanserai.api.project import CONDITION_TERMINATING_AT, Project, ProjectPhase
from caravanserai.client.http import CaravanseraiClient
from caravanserai.informer import (
    Clock,
    Controller,
    ControllerContext,
    Result,
    RunnableController,
    SharedInformer,
    index_by_node_ref,
)
from controllers.node_health import describe_absence, node_available
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
    if mark is None or mark.last_transition_time is None:
        return Plan(Action.MARK, requeue_after=timeout)
    left = (mark.last_transition_time + timedelta(seconds=timeout) - now).total_seconds()
    if left > 0:
        return Plan(Action.NOTHING, requeue_after=left)
    return Plan(Action.FORCE)


class Termination:
    """The reconciler: apply :func:`plan` to one project."""

    def __init__(
        self,
        client: CaravanseraiClient,
        projects: SharedInformer[Project],
        nodes: SharedInformer[Node],
        clock: Clock,
        timeout: float,
        log: Any,
    ) -> None:
        self.client = client
        self.projects = projects
        self.nodes = nodes
        self.clock = clock
        self.timeout = timeout
        self.log = log

    async def reconcile(self, name: str) -> Result | None:
        """Remove, force or keep waiting for project ``name``."""
        project = self.projects.get(name)
        if project is None:
            return None
        node_name = project.status.node_ref
        node = self.nodes.get(node_name) if node_name else None
        now = self.clock.now()
        decision = plan(project, node, now, self.timeout)
        try:
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
                    timeout=self.timeout,
                    why=describe_absence(node_name, node),
                )
            elif decision.action in (Action.MARK, Action.CLEAR):
                status = project.status.model_copy(deep=True)
                remove_condition(status.conditions, CONDITION_TERMINATING_AT)
                if decision.action is Action.MARK:
                    status.conditions.append(
                        Condition(
                            type=CONDITION_TERMINATING_AT,
                            status=ConditionStatus.TRUE,
                            reason=REASON_NODE_NOT_READY,
                            message=(
                                f"{describe_absence(node_name, node).capitalize()}; the "
                                "project is force-terminated unless it recovers within "
                                f"{format_duration(self.timeout)}"
                            ),
                            last_transition_time=now,
                        )
                    )
                await self.client.projects.update_status(
                    project.model_copy(update={"status": status})
                )
                self.log.info(
                    "project.termination_timer_started"
                    if decision.action is Action.MARK
                    else "project.termination_timer_cleared",
                    kind="Project",
                    name=name,
                    node=node_name,
                )
        except Conflict:
            return Result(requeue=True)  # it changed meanwhile: decide again on fresh data
        except NotFound:
            return None
        if decision.requeue_after is not None:
            return Result(requeue_after=decision.requeue_after)
        return None


def controller(ctx: ControllerContext) -> RunnableController:
    """Entry point ``termination``."""
    settings = load_settings(ctx.name, ctx.config)
    projects = ctx.informers.projects(indexers={NODE_REF_INDEX: index_by_node_ref})
    nodes = ctx.informers.nodes()
    reconciler = Termination(
        ctx.client, projects, nodes, ctx.clock, settings.terminating_timeout, ctx.log
    )
    ctrl: Controller[str] = Controller(
        ctx.name, reconciler, workers=settings.workers, clock=ctx.clock, kind="Project"
    )

    def concerns(_old: Project | None, project: Project) -> bool:
        return project.status.phase in (ProjectPhase.TERMINATING, ProjectPhase.TERMINATED)

    ctrl.watch(projects, predicate=concerns)

    def terminating_on(node: Node) -> list[str]:
        return sorted(
            name
            for name in projects.cache.index_keys(NODE_REF_INDEX, node.metadata.name)
            if (p := projects.get(name)) is not None and p.status.phase is ProjectPhase.TERMINATING
        )

    def availability_changed(old: Node | None, new: Node) -> bool:
        return old is None or node_available(old) != node_available(new)

    ctrl.watch(nodes, keys=terminating_on, predicate=availability_changed)
    return ctrl
