"""condition clock: a project condition written once whose ``lastTransitionTime`` starts a timer.

The rescheduler (``NotReadyAt``, the grace period) and the termination controller
(``TerminatingAt``, the force-termination timeout) both work this way: when a project's
node is first seen gone, the condition is written with ``lastTransitionTime = now``; the
time left is ``lastTransitionTime + seconds - now`` and the project is looked at again
then; the condition is removed when it no longer applies. This module holds that shared
piece: the pure arithmetic (:func:`time_left`, :func:`requeue_after`), the two writes
(:func:`start_clock`, :func:`stop_clock`) and the reconciler skeleton
(:class:`ProjectClockReconciler`) that reads a project and its node, asks the controller
for a plan, applies it and turns a 409 into "look again".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from caravanserai.api.base import Condition, ConditionStatus, remove_condition
from caravanserai.api.node import Node
from caravanserai.api.problems import Conflict, NotFound
from caravanserai.api.project import Project
from caravanserai.client.interface import Client
from caravanserai.informer import Clock, Result, SharedInformer

__all__ = [
    "ProjectClockReconciler",
    "requeue_after",
    "start_clock",
    "stop_clock",
    "time_left",
]


def time_left(mark: Condition | None, seconds: float, now: datetime) -> float | None:
    """Seconds until the clock ``mark`` started runs out (<= 0: it has), pure.

    None when the clock has not started: no condition, or one without a
    ``lastTransitionTime``.
    """
    if mark is None or mark.last_transition_time is None:
        return None
    return (mark.last_transition_time + timedelta(seconds=seconds) - now).total_seconds()


def requeue_after(seconds: float | None) -> Result | None:
    """A reconcile result that looks again after ``seconds`` (None: no timer)."""
    return Result(requeue_after=seconds) if seconds is not None else None


async def _write(
    client: Client, project: Project, condition_type: str, mark: Condition | None
) -> None:
    status = project.status.model_copy(deep=True)
    remove_condition(status.conditions, condition_type)
    if mark is not None:
        status.conditions.append(mark)
    await client.projects.update_status(project.model_copy(update={"status": status}))


async def start_clock(
    client: Client,
    project: Project,
    condition_type: str,
    reason: str,
    message: str,
    now: datetime,
) -> None:
    """Write the condition ``condition_type`` (True, since ``now``): the clock starts."""
    mark = Condition(
        type=condition_type,
        status=ConditionStatus.TRUE,
        reason=reason,
        message=message,
        last_transition_time=now,
    )
    await _write(client, project, condition_type, mark)


async def stop_clock(client: Client, project: Project, condition_type: str) -> None:
    """Remove the condition ``condition_type`` (and nothing else)."""
    await _write(client, project, condition_type, None)


class _Plan(Protocol):
    @property
    def requeue_after(self) -> float | None: ...


PlanT = TypeVar("PlanT", bound=_Plan)


class ProjectClockReconciler(ABC, Generic[PlanT]):
    """A reconciler of one project on its node, with a clock of ``seconds``.

    :meth:`reconcile` reads the project and its node (None: missing) from the informers,
    asks :meth:`plan` what to do, lets :meth:`apply` do it and re-arms the timer the plan
    asks for. Every write carries the project's resourceVersion: a 409 means the project
    changed meanwhile and is looked at again; a 404 means it is gone.
    """

    def __init__(
        self,
        client: Client,
        projects: SharedInformer[Project],
        nodes: SharedInformer[Node],
        clock: Clock,
        seconds: float,
        log: Any,
    ) -> None:
        self.client = client
        self.projects = projects
        self.nodes = nodes
        self.clock = clock
        self.seconds = seconds
        self.log = log

    @abstractmethod
    def plan(self, project: Project, node: Node | None, now: datetime) -> PlanT:
        """Decide what to do with ``project`` (pure)."""

    @abstractmethod
    async def apply(
        self,
        decision: PlanT,
        project: Project,
        node_name: str | None,
        node: Node | None,
        now: datetime,
    ) -> None:
        """Carry ``decision`` out through the client."""

    async def reconcile(self, name: str) -> Result | None:
        """Look at project ``name`` against its node and the clock."""
        project = self.projects.get(name)
        if project is None:
            return None
        node_name = project.status.node_ref
        node = self.nodes.get(node_name) if node_name else None
        now = self.clock.now()
        decision = self.plan(project, node, now)
        try:
            await self.apply(decision, project, node_name, node, now)
        except Conflict:
            return Result(requeue=True)  # it changed meanwhile: decide again on fresh data
        except NotFound:
            return None
        return requeue_after(decision.requeue_after)
