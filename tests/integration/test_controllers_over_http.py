"""The same controller factories, unchanged, run out of process: informers and writes over
HTTP (``ControllerContext.over_http``) against a cara-server that runs no manager."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from test_controllers_harness import (  # type: ignore[import-not-found]
    a_project,
    eventually,
    ready_node,
    report,
    serve,
    wait_gone,
    wait_phase,
)

from caravanserai.api.project import Project, ProjectPhase
from caravanserai.client.http import CaravanseraiClient
from caravanserai.informer import ControllerContext, InformerFactory, run_controllers
from caravanserai.store.postgres import PostgresStore
from controllers import gc, scheduler, termination


async def test_scheduler_termination_and_gc_over_http(
    store: PostgresStore, database_url: str
) -> None:
    # A separate program: its own client, its own informers (over HTTP), the factories.
    async with (
        serve(store, database_url, with_manager=False) as server,
        CaravanseraiClient(server.url) as client,
    ):
        informers = InformerFactory.over_http(client)
        runnables = [
            factory(ControllerContext.over_http(name, client, informers=informers))
            for name, factory in (
                ("scheduler", scheduler.controller),
                ("termination", termination.controller),
                ("gc", gc.controller),
            )
        ]
        task = asyncio.create_task(run_controllers(informers, runnables))
        try:
            c = server.client
            await ready_node(c, "n1")
            await ready_node(c, "n2")
            for name in ("a", "b"):
                await c.projects.create(a_project(name))
            a = await wait_phase(c, "a", ProjectPhase.SCHEDULED)
            b = await wait_phase(c, "b", ProjectPhase.SCHEDULED)
            assert {a.status.node_ref, b.status.node_ref} == {"n1", "n2"}

            await report(c, "a", ProjectPhase.RUNNING, "ContainersRunning")
            await c.projects.delete("a")
            await report(c, "a", ProjectPhase.TERMINATED, "ResourcesRemoved")
            await wait_gone(c, "a")

            await c.projects.create(
                a_project("temp", expire_at=datetime.now(UTC) + timedelta(seconds=3))
            )
            # Scheduled before it expires, so gc's delete is the graceful one.
            await wait_phase(c, "temp", ProjectPhase.SCHEDULED)
            await wait_phase(c, "temp", ProjectPhase.TERMINATING, within=10)
            await report(c, "temp", ProjectPhase.TERMINATED, "ResourcesRemoved")
            await wait_gone(c, "temp")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_two_racing_schedulers_never_assign_a_project_twice(
    store: PostgresStore, database_url: str
) -> None:
    """Split brain on purpose: two schedulers (separate programs, separate caches) place the
    same projects at once. The resourceVersion precondition lets exactly one write win."""
    async with serve(store, database_url, with_manager=False) as server:
        c = server.client
        for i in range(4):
            await ready_node(c, f"n{i}")
        await asyncio.gather(*(c.projects.create(a_project(f"p{i:03d}")) for i in range(120)))
        clients = [CaravanseraiClient(server.url) for _ in range(2)]
        tasks = []
        for n, client in enumerate(clients):
            informers = InformerFactory.over_http(client)
            ctx = ControllerContext.over_http(f"scheduler-{n}", client, informers=informers)
            tasks.append(
                asyncio.create_task(run_controllers(informers, [scheduler.controller(ctx)]))
            )
        try:

            async def all_scheduled() -> list[Project] | None:
                items = (await c.projects.list()).items
                done = all(p.status.phase is ProjectPhase.SCHEDULED for p in items)
                return items if done else None

            items = await eventually(all_scheduled, what="every project Scheduled")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in clients:
                await client.close()
        for p in items:
            phases = [h.phase for h in p.status.history]
            assert phases == [ProjectPhase.PENDING, ProjectPhase.SCHEDULED], p.metadata.name
