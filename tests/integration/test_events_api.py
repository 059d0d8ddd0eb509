"""The Event kind over HTTP and the in-process client: record (create or aggregate), list
with field selectors, watch, delete, and aggregation under concurrent writers (real
PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import server_support
from server_support import Api, open_watch

from caravanserai.api.event import EventKind, new_event
from caravanserai.registry import Registries
from caravanserai.server.inprocess import InProcessClient
from caravanserai.store.postgres import PostgresStore

api = pytest.fixture(server_support.serve_api, name="api")

T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def occurrence(name: str, reason: str = "BackOff", message: str = "back-off 10s", **kw: Any) -> Any:
    return new_event(
        "Project", name, reason, message, type_=EventKind.WARNING, component="cara-agent",
        instance="n1", now=kw.pop("now", T0), **kw,
    )


async def test_post_creates_then_aggregates_by_name(api: Api) -> None:
    first = occurrence("web")
    status, body, resp = await api.call("POST", "/api/v1/events", first.to_wire())
    assert status == 201, body
    assert resp.headers["Location"] == f"/api/v1/events/{first.metadata.name}"
    assert body["count"] == 1 and body["involvedObject"] == {"kind": "Project", "name": "web"}

    later = occurrence("web", now=T0 + timedelta(minutes=3))
    assert later.metadata.name == first.metadata.name
    status, body, _ = await api.call("POST", "/api/v1/events", later.to_wire())
    assert status == 200, body
    assert body["count"] == 2
    assert body["firstTimestamp"] == "2026-12-02T06:00:00Z"
    assert body["lastTimestamp"] == "2026-12-02T06:03:00Z"

    status, got, _ = await api.call("GET", f"/api/v1/events/{first.metadata.name}")
    assert status == 200 and got["count"] == 2


async def test_a_different_occurrence_under_a_taken_name_is_409(api: Api) -> None:
    first = occurrence("web")
    assert (await api.call("POST", "/api/v1/events", first.to_wire()))[0] == 201
    other = occurrence("web", reason="Pulled").model_copy(update={"metadata": first.metadata})
    status, body, _ = await api.call("POST", "/api/v1/events", other.to_wire())
    assert status == 409, body


async def test_list_selects_by_involved_object(api: Api) -> None:
    for name, reason in (("web", "Scheduled"), ("web", "Started"), ("db", "Started")):
        ev = new_event("Project", name, reason, f"{reason} {name}", now=T0)
        assert (await api.call("POST", "/api/v1/events", ev.to_wire()))[0] == 201
    node = new_event("Node", "web", "Ready", "node web is ready", now=T0)
    assert (await api.call("POST", "/api/v1/events", node.to_wire()))[0] == 201

    status, body, _ = await api.call(
        "GET", "/api/v1/events",
        params={"fieldSelector": "involvedObject.kind=Project,involvedObject.name=web"},
    )
    assert status == 200, body
    assert body["kind"] == "EventList"
    assert sorted(i["reason"] for i in body["items"]) == ["Scheduled", "Started"]

    status, body, _ = await api.call(
        "GET", "/api/v1/events", params={"fieldSelector": "involvedObject.name!=web"}
    )
    assert [i["involvedObject"]["name"] for i in body["items"]] == ["db"]

    status, body, _ = await api.call(
        "GET", "/api/v1/events", params={"fieldSelector": "involvedObject.color=red"}
    )
    assert status == 400, body


async def test_watch_streams_new_events_and_count_bumps(api: Api) -> None:
    stream = await open_watch(
        api, "events", resourceVersion="0", fieldSelector="involvedObject.name=web"
    )
    try:
        await api.call("POST", "/api/v1/events", occurrence("other").to_wire())
        await api.call("POST", "/api/v1/events", occurrence("web").to_wire())
        await api.call("POST", "/api/v1/events", occurrence("web").to_wire())
        added, modified = await stream.take(2)
        assert added["type"] == "ADDED" and added["object"]["count"] == 1
        assert modified["type"] == "MODIFIED" and modified["object"]["count"] == 2
        assert added["object"]["involvedObject"]["name"] == "web"
    finally:
        await stream.close()


async def test_delete_with_a_stale_version_is_409_then_deletes(api: Api) -> None:
    ev = occurrence("web")
    _, body, _ = await api.call("POST", "/api/v1/events", ev.to_wire())
    rv = body["metadata"]["resourceVersion"]
    await api.call("POST", "/api/v1/events", ev.to_wire())  # count 2, new version
    path = f"/api/v1/events/{ev.metadata.name}"
    status, _, _ = await api.call("DELETE", path, params={"resourceVersion": rv})
    assert status == 409
    assert (await api.call("DELETE", path))[0] == 204
    assert (await api.call("GET", path))[0] == 404


async def test_concurrent_reporters_lose_no_occurrence(store: PostgresStore) -> None:
    # Many writers (several "processes": own stores) reporting the same occurrence at once:
    # every one is counted, in exactly one object.
    client = InProcessClient(Registries(store))
    writers = 40
    await asyncio.gather(*(client.events.record(occurrence("web")) for _ in range(writers)))
    listed = await client.events.list(field_selector="involvedObject.name=web")
    assert [e.count for e in listed.items] == [writers]


async def test_the_server_reports_project_created_and_deleting(api: Api) -> None:
    stream = await open_watch(
        api, "events", resourceVersion="0", fieldSelector="involvedObject.kind=Project"
    )
    try:
        status, _, _ = await api.call(
            "POST", "/api/v1/projects", server_support.manifest("dry"), params={"dryRun": "All"}
        )
        assert status == 201
        await api.create_project("web")
        assert (await api.call("DELETE", "/api/v1/projects/web"))[0] == 204
        created, deleting = await stream.take(2)
    finally:
        await stream.close()
    # In order, and nothing for the dry run (which came first).
    assert [(e["object"]["involvedObject"]["name"], e["object"]["reason"])
            for e in (created, deleting)] == [("web", "Created"), ("web", "Deleting")]
    assert created["object"]["reportingComponent"] == "cara-server"
    assert deleting["object"]["message"] == "Deleting project web"
