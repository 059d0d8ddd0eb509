"""Helpers for the controller and manager integration tests: a real cara-server app (real
PostgreSQL, real HTTP on 127.0.0.1) with the controller manager, a client, a
poll-with-timeout helper and the agent's side of the protocol (register, heartbeat, report
phases)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web

from caravanserai.api.base import ObjectMeta
from caravanserai.api.node import Heartbeat, Node, NodeState
from caravanserai.api.problems import NotFound
from caravanserai.api.project import Project, ProjectPhase, ProjectSpec, ServiceDef
from caravanserai.client.http import CaravanseraiClient
from caravanserai.informer import Clock
from caravanserai.server.app import create_app
from caravanserai.server.config import ServerConfig
from caravanserai.server.manager import (
    MANAGER,
    ControllerManager,
    ManagerSettings,
    controller_manager,
)
from caravanserai.store.types import Store

T = TypeVar("T")

# Leases short enough for fail-over tests to take seconds, long enough for a busy CI box.
LEASE = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.25}


def manager_settings(
    controllers: tuple[str, ...] = ("*",),
    *,
    release_on_stop: bool = True,
    **config: Mapping[str, Any],
) -> ManagerSettings:
    """Fast leader election; ``config`` maps controller names to their ``ctx.config``."""
    return ManagerSettings(
        controllers=controllers,
        release_on_stop=release_on_stop,
        controller_config={k.replace("_", "-"): v for k, v in config.items()},
        **LEASE,  # type: ignore[arg-type]
    )


@dataclass
class Server:
    """One running cara-server app."""

    app: web.Application
    runner: web.AppRunner
    client: CaravanseraiClient
    url: str
    stopped: bool = field(default=False)

    @property
    def manager(self) -> ControllerManager:
        return self.app[MANAGER]

    async def stop(self) -> None:
        """Shut the app down (the manager stops its controllers and leaves the election)."""
        if not self.stopped:
            self.stopped = True
            await self.client.close()
            await self.runner.cleanup()


@contextlib.asynccontextmanager
async def serve(
    store: Store,
    database_url: str,
    settings: ManagerSettings | None = None,
    *,
    with_manager: bool = True,
    clock: Clock | None = None,
    identity: str | None = None,
    api_token: str | None = None,
) -> AsyncIterator[Server]:
    """A cara-server app on 127.0.0.1 (a free port) with (by default) the manager."""
    # Without a token the server is served as with --insecure-allow-anonymous (on loopback):
    # authorization is not what these tests are about.
    config = ServerConfig(
        database_url=database_url, host="127.0.0.1", port=0, api_token=api_token,
        insecure_allow_anonymous=api_token is None,
    )
    extra = (
        [controller_manager(settings or manager_settings(), clock=clock, identity=identity)]
        if with_manager
        else []
    )
    app = create_app(config, store, extra_startup=extra)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        server = Server(app, runner, CaravanseraiClient(url, token=api_token), url)
        try:
            yield server
        finally:
            await server.stop()
    finally:
        await runner.cleanup()


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    within: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while True:
        try:
            last = await check()
        except NotFound as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


async def scheduler_idle_with(server: Server, *names: str) -> None:
    """Wait until the leader's scheduler has seen ``names`` and has nothing left to do."""
    from caravanserai.informer import Controller

    async def check() -> bool:
        manager = server.manager
        runnable = manager.controllers.get("scheduler")
        if manager.informers is None or not isinstance(runnable, Controller):
            return False
        projects = manager.informers.projects()
        seen = all(projects.get(n) is not None for n in names)
        queue = runnable.queue
        delivered = all(r.pending == 0 for r in runnable.registrations)
        return seen and delivered and queue.is_idle()

    await eventually(check, what="the scheduler to be idle")


async def phase_of(client: CaravanseraiClient, name: str) -> ProjectPhase | None:
    return (await client.projects.get(name)).status.phase


async def wait_phase(
    client: CaravanseraiClient, name: str, phase: ProjectPhase, within: float = 15.0
) -> Project:
    async def check() -> Project | None:
        p = await client.projects.get(name)
        return p if p.status.phase is phase else None

    return await eventually(check, within=within, what=f"project {name} {phase}")


async def wait_gone(client: CaravanseraiClient, name: str, within: float = 15.0) -> None:
    async def check() -> bool:
        try:
            await client.projects.get(name)
        except NotFound:
            return True
        return False

    await eventually(check, within=within, what=f"project {name} removed")


async def wait_node_state(
    client: CaravanseraiClient, name: str, state: NodeState, within: float = 15.0
) -> Node:
    async def check() -> Node | None:
        n = await client.nodes.get(name)
        return n if n.status.state is state else None

    return await eventually(check, within=within, what=f"node {name} {state}")


def a_project(name: str, *, expire_at: datetime | None = None) -> Project:
    return Project(
        metadata=ObjectMeta(name=name),
        spec=ProjectSpec(services=[ServiceDef(name="web", image="busybox")], expire_at=expire_at),
    )


async def ready_node(client: CaravanseraiClient, name: str, *, unschedulable: bool = False) -> None:
    """Register a node and send the agent's first heartbeat (state Ready)."""
    await client.nodes.create(
        {
            "apiVersion": "caravanserai/v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"hostname": name, "unschedulable": unschedulable},
        }
    )
    await client.nodes.heartbeat(name, Heartbeat(state=NodeState.READY))


async def report(client: CaravanseraiClient, name: str, phase: ProjectPhase, reason: str) -> None:
    """What the agent sends once it ran (or removed) a project's containers."""
    await client.projects.patch_status(name, phase, reason, f"agent says {phase}")


@contextlib.asynccontextmanager
async def heartbeating(
    client: CaravanseraiClient, *names: str, every: float = 0.2
) -> AsyncIterator[set[str]]:
    """Keep heartbeating ``names`` (the yielded set: remove a name to "kill" its agent)."""
    alive = set(names)

    async def beat() -> None:
        while True:
            for name in list(alive):
                with contextlib.suppress(NotFound):
                    await client.nodes.heartbeat(name, Heartbeat(state=NodeState.READY))
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield alive
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
