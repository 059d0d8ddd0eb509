"""The typed client against a real cara-server (and PostgreSQL): every route, typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from test_client_support import (
    RunningServer,
    free_port,
    node_manifest,
    project_manifest,
    running_server,
)

from caravanserai.api import (
    AlreadyExists,
    Conflict,
    EventType,
    Expired,
    Heartbeat,
    Invalid,
    Node,
    NodeState,
    NotFound,
    Project,
    ProjectPhase,
)
from caravanserai.api.problems import BadRequest
from caravanserai.client import (
    CaravanseraiClient,
    ListOptions,
    RequestTimeout,
    ServerUnreachable,
    WatchEvent,
)
from caravanserai.store.postgres import PostgresStore


@pytest.fixture
async def server(store: PostgresStore) -> AsyncIterator[RunningServer]:
    async with running_server(store) as s:
        yield s


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[CaravanseraiClient]:
    async with CaravanseraiClient(server.url, timeout=5) as c:
        yield c


async def test_server_routes(client: CaravanseraiClient) -> None:
    assert await client.healthz() is True
    assert await client.readyz() is True
    version = await client.version()
    assert version["apiVersion"] == "caravanserai/v1"


async def test_project_crud_and_typed_errors(client: CaravanseraiClient) -> None:
    created = await client.projects.create(project_manifest("web", {"app": "web"}))
    assert isinstance(created, Project)
    assert created.status.phase is ProjectPhase.PENDING
    assert created.metadata.resource_version

    with pytest.raises(AlreadyExists) as exc:
        await client.projects.create(project_manifest("web"))
    assert exc.value.status == 409

    got = await client.projects.get("web")
    assert got == created
    with pytest.raises(NotFound):
        await client.projects.get("nope")

    bad = project_manifest("bad")
    bad["spec"]["services"][0]["image"] = ""
    with pytest.raises(Invalid) as inv:
        await client.projects.create(bad)
    assert inv.value.errors and any("image" in e.field for e in inv.value.errors)

    # update with a precondition
    changed = got.model_copy(deep=True)
    changed.metadata.labels["tier"] = "front"
    updated = await client.projects.update(changed)
    assert updated.metadata.labels == {"app": "web", "tier": "front"}
    assert int(updated.metadata.resource_version or 0) > int(got.metadata.resource_version or 0)
    with pytest.raises(Conflict):
        await client.projects.update(changed)  # stale resourceVersion

    # list with selectors and pagination
    for i in range(5):
        await client.projects.create(project_manifest(f"p{i}", {"app": "batch"}))
    everything = await client.projects.list()
    assert len(everything.items) == 6 and everything.resource_version
    batch = await client.projects.list(label_selector="app=batch")
    assert sorted(p.metadata.name for p in batch.items) == [f"p{i}" for i in range(5)]
    page = await client.projects.list(limit=2)
    assert len(page.items) == 2 and page.continue_
    all_pages = await client.projects.list_all(page_size=2)
    assert sorted(p.metadata.name for p in all_pages.items) == sorted(
        p.metadata.name for p in everything.items
    )
    pending = await client.projects.list(ListOptions.of(phase=ProjectPhase.PENDING))
    assert len(pending.items) == 6
    assert (await client.projects.list(phase=["Running", "Failed"])).items == []
    with pytest.raises(BadRequest):
        await client.projects.list(label_selector="a in (")

    # delete without a node: gone at once
    assert await client.projects.delete("p0") is None
    with pytest.raises(NotFound):
        await client.projects.delete("p0")


async def test_status_routes_heartbeat_and_graceful_delete(client: CaravanseraiClient) -> None:
    node = await client.nodes.create(node_manifest("n1"))
    assert isinstance(node, Node)
    await client.nodes.heartbeat("n1", Heartbeat(state=NodeState.READY))
    await client.nodes.heartbeat("n1")
    node = await client.nodes.get("n1")
    assert node.status.state is NodeState.READY and node.status.last_heartbeat is not None
    with pytest.raises(NotFound):
        await client.nodes.heartbeat("ghost")

    # node status PUT
    draining = node.model_copy(deep=True)
    draining.status.state = NodeState.DRAINING
    stored = await client.nodes.update_status(draining)
    assert stored.status.state is NodeState.DRAINING
    with pytest.raises(Conflict):
        await client.nodes.update_status(draining)  # stale resourceVersion

    p = await client.projects.create(project_manifest("app"))
    await client.projects.patch_status("app", ProjectPhase.SCHEDULED, node_ref="n1")
    await client.projects.patch_status("app", "Running", reason="Started", message="ok")
    p = await client.projects.get("app")
    assert p.status.phase is ProjectPhase.RUNNING and p.status.node_ref == "n1"

    # status PUT of the full object
    p.status.phase = ProjectPhase.FAILED
    failed = await client.projects.update_status(p)
    assert failed.status.phase is ProjectPhase.FAILED

    # delete on a node: Terminating (202) with the object; then no resurrection
    await client.projects.patch_status("app", ProjectPhase.RUNNING)
    terminating = await client.projects.delete("app")
    assert terminating is not None
    assert terminating.status.phase is ProjectPhase.TERMINATING
    with pytest.raises(Conflict):
        await client.projects.patch_status("app", ProjectPhase.RUNNING)
    with pytest.raises(Conflict):  # node still has a project
        await client.nodes.delete("n1")
    assert await client.projects.delete("app", force=True) is None
    assert await client.nodes.delete("n1") is None


async def test_watch_yields_typed_events_and_bookmarks(client: CaravanseraiClient) -> None:
    start = await client.projects.list()
    events: list[WatchEvent[Project]] = []
    bookmarked = asyncio.Event()  # a BOOKMARK after the MODIFIED (server interval 1 s)

    async def consume() -> None:
        async for ev in client.projects.watch(start.resource_version):
            events.append(ev)
            if ev.type is EventType.BOOKMARK and any(
                e.type is EventType.MODIFIED for e in events
            ):
                bookmarked.set()
            if ev.type is EventType.DELETED:
                return

    task = asyncio.create_task(consume())
    await client.projects.create(project_manifest("w1"))
    p = await client.projects.get("w1")
    p.metadata.labels["x"] = "y"
    await client.projects.update(p)
    await asyncio.wait_for(bookmarked.wait(), 10)
    await client.projects.delete("w1")
    await asyncio.wait_for(task, 10)
    kinds = [e.type for e in events if e.type is not EventType.BOOKMARK]
    assert kinds == [EventType.ADDED, EventType.MODIFIED, EventType.DELETED]
    assert all(isinstance(e.object, Project) for e in events if e.type is not EventType.BOOKMARK)
    bookmarks = [e for e in events if e.type is EventType.BOOKMARK]
    assert bookmarks and all(e.object is None and e.resource_version for e in bookmarks)
    revs = [int(e.resource_version) for e in events]
    assert revs == sorted(revs)


async def test_watch_without_revision_starts_with_current_objects(
    client: CaravanseraiClient,
) -> None:
    await client.projects.create(project_manifest("a", {"team": "x"}))
    await client.projects.create(project_manifest("b", {"team": "y"}))
    seen: list[str] = []
    async for ev in client.projects.watch(
        None, ListOptions.of(label_selector="team=x"), timeout_seconds=1
    ):
        if ev.type is EventType.ADDED:
            assert ev.name is not None
            seen.append(ev.name)
    assert seen == ["a"]


async def test_watch_expired_is_an_error_event(
    client: CaravanseraiClient, store: PostgresStore
) -> None:
    for i in range(3):
        await client.projects.create(project_manifest(f"e{i}"))
    await store.compact(max_events=0)
    events = [ev async for ev in client.projects.watch("1")]
    assert events[-1].type is EventType.ERROR
    assert isinstance(events[-1].error, Expired)


async def test_connection_refused_names_the_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with CaravanseraiClient(url, timeout=2) as c:
        with pytest.raises(ServerUnreachable) as exc:
            await c.projects.list()
        assert url in str(exc.value)
        assert isinstance(exc.value, ConnectionError)
        with pytest.raises(ServerUnreachable):
            async for _ in c.projects.watch("0"):
                pass


@pytest.fixture
async def slow_server() -> AsyncIterator[str]:
    async def hang(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch"):
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            await asyncio.sleep(30)
            return resp
        await asyncio.sleep(30)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/api/v1/projects", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_every_call_has_a_timeout(slow_server: str) -> None:
    async with CaravanseraiClient(slow_server, timeout=0.5, watch_read_timeout=0.7) as c:
        with pytest.raises(RequestTimeout) as exc:
            await c.projects.list()
        assert "0.5 s" in str(exc.value)
        stream = c.projects.watch("1")
        with pytest.raises(RequestTimeout):
            await stream.__anext__()


async def test_bearer_token_is_sent() -> None:
    seen: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"version": "x", "apiVersion": "caravanserai/v1"})

    app = web.Application()
    app.router.add_get("/api/v1/version", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with CaravanseraiClient(f"http://127.0.0.1:{port}/", token="s3cret") as c:
            await c.version()
    finally:
        await runner.cleanup()
    assert seen == ["Bearer s3cret"]
