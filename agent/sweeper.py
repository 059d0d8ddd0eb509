"""Finding work the informer cannot announce: orphans on this node and container deaths.

- ``Sweeper``: after the project informer has synced (never before: an empty cache would
  make every project look orphaned), and then every ``interval``, list the containers,
  networks and volumes labelled for this node and enqueue every project that is not in
  the cache. The reconciler double-checks with the server before it removes anything,
  so a project still assigned here is never swept.
- ``watch_container_events``: Docker's event stream (containers labelled for this node);
  a container that dies, is OOM-killed, destroyed or started re-triggers its project. After
  a broken stream everything is re-enqueued, since events may have been missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp
import structlog
from aiodocker.exceptions import DockerError

from agent import naming
from agent.runtime import EngineUnavailable, Runtime
from caravanserai.api import Project
from caravanserai.informer.informer import SharedInformer

log = structlog.get_logger("agent.sweeper")

# health_status: a healthcheck result changes readiness, routing and dependants waiting on it.
TRIGGER_ACTIONS = frozenset(
    {"die", "oom", "destroy", "start", "pause", "unpause", "health_status"}
)


class Sweeper:
    def __init__(
        self,
        runtime: Runtime,
        projects: SharedInformer[Project],
        enqueue: Callable[[str], None],
        *,
        node: str,
        interval: float,
    ) -> None:
        self.runtime = runtime
        self.projects = projects
        self.enqueue = enqueue
        self.node = node
        self.interval = interval
        self.sweeps = 0
        self._wake = asyncio.Event()

    def trigger(self) -> None:
        """Sweep soon (e.g. after the Docker event stream broke: events may be lost)."""
        self._wake.set()

    async def find_orphans(self) -> set[str]:
        """Projects with labelled objects on this node that the cache does not assign here."""
        labels = {naming.LABEL_NODE: self.node}
        names: set[str] = set()
        for container in await self.runtime.list_containers(labels):
            if container.project:
                names.add(container.project)
        for obj in [
            *await self.runtime.list_networks(labels),
            *await self.runtime.list_volumes(labels),
        ]:
            if project := obj.labels.get(naming.LABEL_PROJECT):
                names.add(project)
        return {n for n in names if self.projects.get(n) is None}

    async def sweep_once(self) -> set[str]:
        if not self.projects.has_synced:
            return set()
        orphans = await self.find_orphans()
        for name in sorted(orphans):
            log.info("orphaned resources found; queued for sweeping", project=name)
            self.enqueue(name)
        self.sweeps += 1
        return orphans

    async def run(self) -> None:
        await self.projects.wait_for_sync()
        while True:
            try:
                await self.sweep_once()
            except (EngineUnavailable, DockerError, OSError) as exc:
                log.warning("sweep failed; retrying later", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()


async def watch_container_events(
    runtime: Runtime,
    *,
    node: str,
    enqueue: Callable[[str], None],
    on_reconnect: Callable[[], None],
    max_backoff: float = 30.0,
) -> None:
    """Re-trigger projects on Docker container events until cancelled.

    When the stream breaks it is reopened with backoff and ``on_reconnect`` runs (events
    of the gap are lost, so the caller re-enqueues everything).
    """
    loop = asyncio.get_running_loop()
    delay = 0.5
    while True:
        opened = loop.time()
        stream = runtime.container_events({naming.LABEL_NODE: node})
        try:
            async for event in stream:
                project = event.labels.get(naming.LABEL_PROJECT)
                if project and event.action in TRIGGER_ACTIONS:
                    log.debug("container event", project=project, action=event.action,
                              service=event.labels.get(naming.LABEL_SERVICE))
                    enqueue(project)
            log.warning("docker event stream ended; reconnecting", retry_in=delay)
        except (EngineUnavailable, DockerError, aiohttp.ClientError, OSError) as exc:
            log.warning("docker event stream failed; reconnecting", error=str(exc),
                        retry_in=delay)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if loop.time() - opened > 60:
            delay = 0.5
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff)
        on_reconnect()
