"""An example controller: keeps the label ``example.com/phase`` equal to each project's phase.

It shows the whole shape of a controller written on ``caravanserai.informer``:

- a factory ``controller(ctx)`` — publish it as an entry point of the group
  ``caravanserai.controllers`` and the controller manager runs it inside ``cara-server``;
- a ``main()`` that runs the very same factory as its own program over HTTP::

      python examples/controller/phase_labeler.py --server http://localhost:8080

The reconciler is level-triggered: it reads the project from the informer's cache, compares
the label with the phase, and writes only when they differ, with the object's
resourceVersion as a precondition (a 409 just means "look again").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from caravanserai.api import Conflict, NotFound, Project, ProjectPhase
from caravanserai.client import CaravanseraiClient
from caravanserai.informer import (
    Controller,
    ControllerContext,
    Result,
    SharedInformer,
    run_controllers,
)

LABEL = "example.com/phase"
FROZEN = {ProjectPhase.TERMINATING, ProjectPhase.TERMINATED}  # their spec can't change


class PhaseLabeler:
    """The Reconciler: one project name in, the label brought in line."""

    def __init__(self, ctx: ControllerContext, projects: SharedInformer[Project]) -> None:
        self.client = ctx.client
        self.projects = projects
        self.log = ctx.log

    async def reconcile(self, name: str) -> Result | None:
        project = self.projects.get(name)  # the cache: read-only
        if project is None or project.status.phase is None or project.status.phase in FROZEN:
            return None
        phase = str(project.status.phase)
        if project.metadata.labels.get(LABEL) == phase:
            return None
        changed = project.model_copy(deep=True)  # never mutate the cached object
        changed.metadata.labels[LABEL] = phase
        try:
            await self.client.projects.update(changed)  # resourceVersion = precondition
        except Conflict:
            return Result(requeue=True)  # it changed meanwhile: the new version will come
        except NotFound:
            return None
        self.log.info("labelled", name=name, phase=phase)
        return None


def controller(ctx: ControllerContext) -> Controller[str]:
    """The entry point (group ``caravanserai.controllers``): build the controller."""
    projects = ctx.informers.projects()
    ctrl: Controller[str] = Controller(
        ctx.name,
        PhaseLabeler(ctx, projects),
        workers=int(ctx.config.get("workers", 2)),
        clock=ctx.clock,
        kind="Project",
    )
    # Only phase or label changes matter to us.
    ctrl.watch(
        projects,
        predicate=lambda old, new: old is None
        or old.status.phase != new.status.phase
        or old.metadata.labels.get(LABEL) != new.metadata.labels.get(LABEL),
    )
    return ctrl


async def run(server: str, workers: int) -> None:
    """Run the controller out of process, against ``server``."""
    async with CaravanseraiClient(server) as client:
        ctx = ControllerContext.over_http("phase-labeler", client, config={"workers": workers})
        await run_controllers(ctx.informers, [controller(ctx)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("CARA_SERVER", "http://localhost:8080"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(args.server, args.workers))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
