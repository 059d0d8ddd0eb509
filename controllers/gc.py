"""gc: delete projects whose ``spec.expireAt`` has passed, at that time.

Each project with an ``expireAt`` gets one timer for that instant (``expireAt - now``); an
edit of ``expireAt`` is an update event that re-arms it. When it fires the project is
deleted exactly as ``caractrl delete project`` does — ``DELETE /api/v1/projects/{name}``
without ``force`` — so the server applies its own rules: removed at once when it holds no
node, otherwise Terminating, torn down by its agent, then removed by the termination
controller. A project already being deleted is left alone.

The original documented ``expireAt`` but had no GC at all (REFERENCE §10.1).
"""

from __future__ import annotations

from typing import Any

from caravanserai.api.phases import DELETING_PHASES
from caravanserai.api.problems import NotFound
from caravanserai.api.project import Project
from caravanserai.client.interface import Client
from caravanserai.informer import (
    Change,
    Clock,
    Controller,
    ControllerContext,
    Result,
    RunnableController,
    SharedInformer,
    predicate,
)
from controllers.settings import load_settings

__all__ = ["GarbageCollector", "controller", "has_expiry", "seconds_until_expiry"]

_DELETING = DELETING_PHASES


def seconds_until_expiry(project: Project, clock: Clock) -> float | None:
    """Seconds until ``project`` expires (0 once due), None when it never does or is already
    being deleted."""
    expire_at = project.spec.expire_at
    if expire_at is None or project.metadata.deletion_timestamp is not None:
        return None
    if project.status.phase in _DELETING:
        return None
    return clock.until(expire_at)


@predicate
def has_expiry(change: Change[Project]) -> bool:
    """Only projects with an ``expireAt`` (an edit that sets one arrives as an update)."""
    return change.object.spec.expire_at is not None


class GarbageCollector:
    """The reconciler: delete one project when it is due, else wait for its time."""

    def __init__(
        self, client: Client, projects: SharedInformer[Project], clock: Clock, log: Any
    ) -> None:
        self.client = client
        self.projects = projects
        self.clock = clock
        self.log = log

    async def reconcile(self, name: str) -> Result | None:
        """Delete project ``name`` if its ``expireAt`` has passed."""
        project = self.projects.get(name)
        if project is None:
            return None
        left = seconds_until_expiry(project, self.clock)
        if left is None:
            return None
        if left > 0:
            return Result(requeue_after=left)
        try:
            terminating = await self.client.projects.delete(name)
        except NotFound:
            return None
        self.log.info(
            "project.expired",
            kind="Project",
            name=name,
            expire_at=str(project.spec.expire_at),
            outcome="terminating" if terminating is not None else "deleted",
        )
        return None


def controller(ctx: ControllerContext) -> RunnableController:
    """Entry point ``gc``: reconcile every project that has an ``expireAt``."""
    settings = load_settings(ctx.name, ctx.config)
    return (
        Controller.for_(Project, predicate=has_expiry)
        .workers(settings.workers)
        .complete(lambda c: GarbageCollector(c.client, c.informers.projects(), c.clock, c.log))
        .build(ctx)
    )
