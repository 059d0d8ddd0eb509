"""Watch over HTTP: resume, initial list, selector transitions, bookmarks, 410, timeouts,
shutdown, and hundreds of concurrent watchers on one LISTEN connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import psycopg
import pytest
import server_support
from aiohttp.test_utils import TestServer
from server_support import (
    Api,
    Stream,
    make_config,
    manifest,
    names,
    open_watch,
)

from caravanserai.server.app import create_app
from caravanserai.store.hub import HUB_APPLICATION_NAME
from caravanserai.store.postgres import PostgresStore

api = pytest.fixture(server_support.serve_api, name="api")


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


async def test_watch_resumes_after_a_revision(api: Api) -> None:
    a = await api.create_project("a")
    await api.create_project("b")
    await api.create_project("c")
    stream = await open_watch(api, "projects", resourceVersion=rv(a))
    try:
        events = await stream.take(2)
        assert names(events) == [("ADDED", "b"), ("ADDED", "c")]
        await api.create_node("n1")  # another kind: not on this stream
        assert await api.patch_phase("b", "Scheduled", nodeRef="n1") == 204
        status, _, _ = await api.call("DELETE", "/api/v1/projects/c")
        assert status == 204
        events = await stream.take(2)
        assert names(events) == [("MODIFIED", "b"), ("DELETED", "c")]
        assert events[0]["object"]["status"]["phase"] == "Scheduled"
        revisions = [rv(e["object"]) for e in stream.events]
        assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
        # Objects arrive in the conventional key order.
        assert list(events[0]["object"])[:3] == ["apiVersion", "kind", "metadata"]
    finally:
        await stream.close()

    # Resuming from the last seen revision replays nothing twice and misses nothing.
    last = rv(stream.events[-1]["object"])
    await api.create_project("d")
    again = await open_watch(api, "projects", resourceVersion=last)
    try:
        assert names(await again.take(1)) == [("ADDED", "d")]
    finally:
        await again.close()


async def test_watch_without_revision_lists_first_then_streams(api: Api) -> None:
    await api.create_project("x")
    await api.create_project("y")
    stream = await open_watch(api, "projects", allowWatchBookmarks="true")
    try:
        first = [await stream.next() for _ in range(3)]
        assert [e["type"] for e in first] == ["ADDED", "ADDED", "BOOKMARK"]
        assert {e["object"]["metadata"]["name"] for e in first[:2]} == {"x", "y"}
        listed_at = int(first[2]["object"]["metadata"]["resourceVersion"])
        # At or after the last project write (the server's Created events come after it).
        assert listed_at >= max(rv(e["object"]) for e in first[:2])
        await api.create_project("z")
        event = await stream.until(lambda e: e["type"] != "BOOKMARK")
        assert names([event]) == [("ADDED", "z")] and rv(event["object"]) > listed_at
    finally:
        await stream.close()


async def test_objects_entering_and_leaving_the_selection(api: Api) -> None:
    await api.create_node("n1")
    await api.create_project("p")
    running = await open_watch(api, "projects", phase=["Running"], resourceVersion="1")
    labelled = await open_watch(api, "projects", labelSelector="tier=web", resourceVersion="1")
    on_node = await open_watch(api, "projects", fieldSelector="status.nodeRef=n1",
                               resourceVersion="1")
    try:
        assert await api.patch_phase("p", "Scheduled", nodeRef="n1") == 204
        assert names(await on_node.take(1)) == [("ADDED", "p")]
        assert await api.patch_phase("p", "Running") == 204
        assert names(await running.take(1)) == [("ADDED", "p")]
        assert names(await on_node.take(1)) == [("MODIFIED", "p")]
        assert await api.patch_phase("p", "Failed") == 204
        [left] = await running.take(1)
        assert names([left]) == [("DELETED", "p")]
        assert left["object"]["status"]["phase"] == "Failed"  # its new, non-matching state

        body = manifest("p")
        body["spec"]["services"][0]["image"] = "nginx:1.27"
        body["metadata"]["labels"] = {"tier": "web"}
        status, _, _ = await api.call("PUT", "/api/v1/projects/p", body)
        assert status == 200
        [entered] = await labelled.take(1)
        assert names([entered]) == [("ADDED", "p")]
        # The spec change redeployed the Failed project: Scheduled on n1 again.
        assert entered["object"]["status"]["phase"] == "Scheduled"
        body["metadata"]["labels"] = {"tier": "db"}
        await api.call("PUT", "/api/v1/projects/p", body)
        assert names(await labelled.take(1)) == [("DELETED", "p")]
    finally:
        for s in (running, labelled, on_node):
            await s.close()


async def test_bookmarks_carry_a_fresh_revision_to_idle_watchers(api: Api) -> None:
    await api.create_project("quiet")
    stream = await open_watch(
        api, "projects", fieldSelector="metadata.name=quiet", resourceVersion="1",
        allowWatchBookmarks="true",
    )
    try:
        # Writes this watcher does not select still move its bookmark revision forward.
        for i in range(5):
            await api.create_project(f"noise-{i}")
        _status, listed, _ = await api.call("GET", "/api/v1/projects")
        head = int(listed["metadata"]["resourceVersion"])
        mark = await stream.until(
            lambda e: e["type"] == "BOOKMARK"
            and int(e["object"]["metadata"]["resourceVersion"]) >= head
        )
        # At or past the head listed (the server's own Created events may land after it).
        marked = mark["object"]["metadata"]["resourceVersion"]
        assert mark["object"] == {
            "apiVersion": "caravanserai/v1", "kind": "Project",
            "metadata": {"resourceVersion": marked},
        }
        assert all(e["type"] == "BOOKMARK" for e in stream.events)
    finally:
        await stream.close()

    # Resuming from the bookmark: nothing missed, nothing repeated.
    await api.patch_phase("quiet", "Terminating")
    resumed = await open_watch(api, "projects", fieldSelector="metadata.name=quiet",
                               resourceVersion=marked)
    try:
        [event] = await resumed.take(1)
        assert names([event]) == [("MODIFIED", "quiet")]
    finally:
        await resumed.close()


async def test_expired_revision_gives_an_error_event_with_410(api: Api) -> None:
    for i in range(5):
        await api.create_project(f"old-{i}")
    compacted = await api.store.compact(max_events=0)
    assert compacted >= 5
    stream = await open_watch(api, "projects", resourceVersion="2")
    try:
        event = await stream.next()
        assert event is not None and event["type"] == "ERROR"
        problem = event["object"]
        assert problem["status"] == 410 and problem["title"] == "Gone"
        assert problem["type"].endswith("/expired")
        assert await stream.next() is None  # and the stream ends
    finally:
        await stream.close()

    # The recovery path: relist (fresh revision), then watch from it.
    _status, listed, _ = await api.call("GET", "/api/v1/projects")
    fresh = await open_watch(api, "projects", resourceVersion=listed["metadata"]["resourceVersion"])
    try:
        await api.create_project("new")
        assert names(await fresh.take(1)) == [("ADDED", "new")]
    finally:
        await fresh.close()


async def test_timeout_seconds_ends_the_stream_cleanly(api: Api) -> None:
    stream = await open_watch(api, "nodes", timeoutSeconds="1", resourceVersion="0")
    try:
        assert await stream.next(within=10) is None
        assert stream.ended and stream.events == []
    finally:
        await stream.close()


async def test_bad_watch_parameters_are_400_before_streaming(api: Api) -> None:
    for params in ({"resourceVersion": "abc"}, {"timeoutSeconds": "-1"},
                   {"allowWatchBookmarks": "perhaps"}, {"labelSelector": "in (("},
                   {"limit": "99999999"}):
        status, _problem, resp = await api.call(
            "GET", "/api/v1/projects", params={"watch": "true", **params}
        )
        assert status == 400, params
        assert resp.content_type == "application/problem+json"


async def test_many_watchers_each_receive_every_event(api: Api, database_url: str) -> None:
    watchers = 200
    writes = 20
    streams = await asyncio.gather(*(
        open_watch(api, "projects", resourceVersion="0") for _ in range(watchers)
    ))
    try:
        # One LISTEN connection serves them all (the hub), whatever the number of watches.
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND datname = current_database()", (HUB_APPLICATION_NAME,)
            ).fetchone()
        assert row is not None and row[0] == 1

        _status, text, _ = await api.call("GET", "/metrics")
        assert f'cara_watches_open{{kind="Project"}} {float(watchers)}' in text

        for i in range(writes):
            await api.create_project(f"w{i:02d}")
        received = await asyncio.gather(*(s.take(writes, within=60) for s in streams))
        expected = [("ADDED", f"w{i:02d}") for i in range(writes)]
        for events in received:
            assert names(events) == expected
    finally:
        for s in streams:
            await s.close()


async def test_shutdown_ends_open_watches_cleanly(store: PostgresStore, database_url: str) -> None:
    config = make_config(database_url)
    server = TestServer(create_app(config, store), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        url = str(server.make_url("/api/v1/projects"))
        resp = await session.get(url, params={"watch": "1", "allowWatchBookmarks": "true"},
                                 timeout=aiohttp.ClientTimeout(total=None))
        assert resp.status == 200
        stream = Stream(resp)
        async with asyncio.timeout(10):
            # Wait until the stream is really open (a bookmark arrives), then stop the server.
            await stream.until(lambda e: e["type"] == "BOOKMARK")
            closing = asyncio.create_task(server.close())
            # The stream ends with a clean terminating chunk: no ClientPayloadError.
            while await stream.next() is not None:
                pass
            await closing
        assert stream.ended
    # A watch request on a closing server is refused (503 problem) rather than hanging:
    # covered by WatchRegistry.closing; the listener is already gone here.


async def test_watch_lines_are_valid_ndjson(api: Api) -> None:
    await api.create_project("json")
    async with api.session.get(
        api.url("/api/v1/projects"),
        params={"watch": "true", "timeoutSeconds": "1"},
    ) as resp:
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        body = await resp.read()
    lines = body.decode().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "json"
