"""Informers against a real server and PostgreSQL: equal to a fresh list through churn,
server restarts (resume without relist) and compaction (410 → relist and the difference);
the in-process client (on the registry) gives the same results."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_client_support import (
    RunningServer,
    eventually,
    project_manifest,
    running_server,
)

from caravanserai.api import NotFound, Project
from caravanserai.client import CaravanseraiClient, ListOptions
from caravanserai.informer import (
    Backoff,
    HTTPListerWatcher,
    InformerFactory,
    SharedInformer,
    index_by_phase,
)
from caravanserai.registry import Registries
from caravanserai.server.inprocess import InProcessClient
from caravanserai.store.postgres import PostgresStore


def in_process(store: PostgresStore) -> InProcessClient:
    """The client the controller manager gives in-process controllers."""
    return InProcessClient(Registries(store), bookmark_interval=0.5)


class Mirror:
    """Rebuilds the object set from handler callbacks only: proves no event was missed."""

    def __init__(self, informer: SharedInformer[Project]) -> None:
        self.objects: dict[str, str | None] = {}
        self.deletes: list[str] = []
        self.problems: list[str] = []
        informer.add_handler(self.add, self.update, self.delete)

    def add(self, p: Project) -> None:
        if p.metadata.name in self.objects:
            self.problems.append(f"add of known {p.metadata.name}")
        self.objects[p.metadata.name] = p.metadata.resource_version

    def update(self, old: Project, new: Project) -> None:
        if new.metadata.name not in self.objects:
            self.problems.append(f"update of unknown {new.metadata.name}")
        self.objects[new.metadata.name] = new.metadata.resource_version

    def delete(self, p: Project) -> None:
        if self.objects.pop(p.metadata.name, "missing") == "missing":
            self.problems.append(f"delete of unknown {p.metadata.name}")
        self.deletes.append(p.metadata.name)


def snapshot(informer: SharedInformer[Project]) -> dict[str, str | None]:
    return {p.metadata.name: p.metadata.resource_version for p in informer.list()}


async def fresh(client: CaravanseraiClient, options: ListOptions | None = None) -> dict[str, Any]:
    listing = await client.projects.list_all(options)
    return {p.metadata.name: p.metadata.resource_version for p in listing.items}


async def converged(
    client: CaravanseraiClient, *informers: SharedInformer[Project], within: float = 15
) -> dict[str, Any]:
    expected: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal expected
        expected = await fresh(client)
        return all(snapshot(i) == expected for i in informers)

    await eventually(check, within=within, interval=0.1)
    return expected


def fast_backoff() -> Backoff:
    return Backoff(0.05, 0.5, jitter=0.2)


@pytest.fixture
async def server(store: PostgresStore) -> AsyncIterator[RunningServer]:
    async with running_server(store) as s:
        yield s


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[CaravanseraiClient]:
    async with CaravanseraiClient(server.url, timeout=5, watch_read_timeout=5) as c:
        yield c


async def churn(client: CaravanseraiClient, writer: int, ops: int, seed: int) -> None:
    rng = random.Random(seed)
    names = [f"w{writer}-{i}" for i in range(8)]
    for _ in range(ops):
        name = rng.choice(names)
        op = rng.random()
        try:
            if op < 0.45:
                await client.projects.create(project_manifest(name, {"n": str(rng.random())}))
            elif op < 0.8:
                p = await client.projects.get(name)
                p.metadata.labels["n"] = str(rng.random())
                await client.projects.update(p)
            else:
                await client.projects.delete(name)
        except (NotFound, Exception) as exc:  # races with ourselves are expected
            if not isinstance(exc, NotFound) and getattr(exc, "status", 0) != 409:
                raise


async def test_informers_equal_fresh_list_through_churn(
    client: CaravanseraiClient, store: PostgresStore
) -> None:
    for i in range(5):
        await client.projects.create(project_manifest(f"seed{i}"))
    http_inf = SharedInformer(
        HTTPListerWatcher(client.projects, page_size=3),
        indexers={"phase": index_by_phase},
        backoff=fast_backoff(),
    )
    store_inf = SharedInformer(
        HTTPListerWatcher(in_process(store).projects), backoff=fast_backoff()
    )
    mirrors = [Mirror(http_inf), Mirror(store_inf)]
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(http_inf.run()), tg.create_task(store_inf.run())]
        await asyncio.wait_for(http_inf.wait_for_sync(), 10)
        await asyncio.wait_for(store_inf.wait_for_sync(), 10)
        await asyncio.gather(*(churn(client, w, 60, seed=w) for w in range(6)))
        expected = await converged(client, http_inf, store_inf)
        await http_inf.wait_for_handlers()
        await eventually(lambda: all(m.objects == expected for m in mirrors), within=10)
        for t in tasks:
            t.cancel()
    for m in mirrors:
        assert m.problems == []
    assert http_inf.reflector.list_count == 1 and store_inf.reflector.list_count == 1
    assert len(http_inf.by_index("phase", "Pending")) == len(expected)


async def test_server_restart_resumes_without_relist(
    server: RunningServer, client: CaravanseraiClient
) -> None:
    for i in range(3):
        await client.projects.create(project_manifest(f"r{i}"))
    informer = SharedInformer(HTTPListerWatcher(client.projects), backoff=fast_backoff())
    mirror = Mirror(informer)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_for_sync(), 10)
        for round_ in range(2):
            await server.stop()
            await asyncio.sleep(0.3)
            await server.start()
            await client.projects.create(project_manifest(f"after{round_}"))
            await client.projects.delete("r0") if round_ == 0 else None
            expected = await converged(client, informer)
        await eventually(lambda: mirror.objects == expected)
        assert informer.reflector.list_count == 1, "resumed from the last revision"
        assert informer.reflector.watch_count >= 3
        assert mirror.deletes == ["r0"] and mirror.problems == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_compaction_gives_410_then_relist_delivers_difference(
    server: RunningServer, client: CaravanseraiClient, store: PostgresStore
) -> None:
    for i in range(4):
        await client.projects.create(project_manifest(f"c{i}"))
    informer = SharedInformer(HTTPListerWatcher(client.projects), backoff=fast_backoff())
    mirror = Mirror(informer)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_for_sync(), 10)
        await server.stop()
        # While this server is down, another one (same database) takes writes ...
        async with running_server(store) as other, CaravanseraiClient(other.url) as c2:
            await c2.projects.delete("c0")
            await c2.projects.delete("c1")
            p = await c2.projects.get("c2")
            p.metadata.labels["changed"] = "yes"
            await c2.projects.update(p)
            await c2.projects.create(project_manifest("new"))
        # ... and the log is compacted past the informer's revision.
        await store.compact(max_events=0)
        await server.start()
        expected = await converged(client, informer)
        await eventually(lambda: mirror.objects == expected)
        assert informer.reflector.list_count == 2, "410 → exactly one relist"
        assert sorted(mirror.deletes) == ["c0", "c1"], "deletes seen through the relist"
        assert mirror.problems == []
        assert informer.get("c2") is not None
        assert informer.get("c2").metadata.labels == {"changed": "yes"}  # type: ignore[union-attr]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_selector_informer_sees_objects_enter_and_leave(
    client: CaravanseraiClient, store: PostgresStore
) -> None:
    factory = InformerFactory.over_http(client)
    in_proc = InformerFactory.over_client(in_process(store))
    opts = ListOptions.of(label_selector="team=red")
    informers = [factory.projects(opts), in_proc.projects(opts)]
    assert factory.projects(opts) is informers[0], "shared per selection"
    async with asyncio.TaskGroup() as tg:
        runs = [tg.create_task(factory.run()), tg.create_task(in_proc.run())]
        await factory.wait_for_sync()
        await in_proc.wait_for_sync()
        await client.projects.create(project_manifest("x", {"team": "red"}))
        await client.projects.create(project_manifest("y", {"team": "blue"}))
        await eventually(lambda: all(i.get("x") for i in informers))
        p = await client.projects.get("x")
        p.metadata.labels["team"] = "blue"
        await client.projects.update(p)
        await eventually(lambda: all(i.get("x") is None for i in informers))
        y = await client.projects.get("y")
        y.metadata.labels["team"] = "red"
        await client.projects.update(y)
        await eventually(lambda: all([o.metadata.name for o in i.list()] == ["y"]
                                     for i in informers))
        for r in runs:
            r.cancel()
