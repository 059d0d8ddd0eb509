"""Heartbeats as node leases over the HTTP API (real PostgreSQL, a real aiohttp server): a
heartbeat that changes nothing of a Ready node renews its lease only — no revision, no
event, the Node untouched — and ``GET /api/v1/nodes/{name}/heartbeat`` tells the latest."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import server_support

from caravanserai.registry import lifecycle

api = pytest.fixture(server_support.serve_api, name="api")

FULL = {
    "state": "Ready",
    "network": {"ip": "10.0.0.5", "agentPort": 9090},
    "capacity": {"cpu": "4"},
    "info": {"agentVersion": "0.1.0"},
}


async def beat(api: server_support.Api, name: str, body: Any = None, **params: str) -> None:
    status, problem, _ = await api.call(
        "POST", f"/api/v1/nodes/{name}/heartbeat", body, params=params or None
    )
    assert status == 204, problem


async def last_heartbeat(api: server_support.Api, name: str) -> datetime | None:
    status, body, _ = await api.call("GET", f"/api/v1/nodes/{name}/heartbeat")
    assert status == 200, body
    assert body["kind"] == "NodeHeartbeat" and body["nodeName"] == name
    value = body.get("lastHeartbeat")  # omitted until the first heartbeat
    return datetime.fromisoformat(value) if value is not None else None


async def test_a_heartbeat_of_no_news_renews_the_lease_only(api: server_support.Api) -> None:
    await api.create_node("n1")
    assert await last_heartbeat(api, "n1") is None  # registered, never heard from
    await beat(api, "n1", FULL)  # NotReady → Ready: written
    node = await api.get("nodes", "n1")
    assert node["status"]["state"] == "Ready"
    first = await last_heartbeat(api, "n1")
    assert first == datetime.fromisoformat(node["status"]["lastHeartbeat"])
    head = await api.store.current_revision()

    for body in (FULL, {"state": "Ready"}, None):  # the same report, less of it, nothing
        await beat(api, "n1", body)
    assert await api.store.current_revision() == head  # no write, so no event for watchers
    assert await api.get("nodes", "n1") == node
    renewed = await last_heartbeat(api, "n1")
    assert first is not None and renewed is not None and renewed > first

    # News is written: the Node gets a revision, and lastHeartbeat with it.
    await beat(api, "n1", {"state": "Ready", "network": {"ip": "10.0.0.6"}})
    moved = await api.get("nodes", "n1")
    assert int(moved["metadata"]["resourceVersion"]) > int(node["metadata"]["resourceVersion"])
    assert moved["status"]["network"]["ip"] == "10.0.0.6"
    assert datetime.fromisoformat(moved["status"]["lastHeartbeat"]) == await last_heartbeat(
        api, "n1"
    )


async def test_a_node_not_ready_is_rewritten_by_every_heartbeat(api: server_support.Api) -> None:
    """node-health recovers a silent node when it sees the heartbeat: never lease-only."""
    await api.create_node("n1")
    await beat(api, "n1", FULL)
    node = await api.get("nodes", "n1")
    node["status"]["state"] = "NotReady"
    status, body, _ = await api.call("PUT", "/api/v1/nodes/n1/status", node)
    assert status == 200, body
    rv = int(body["metadata"]["resourceVersion"])
    await beat(api, "n1")  # timestamp only
    after = await api.get("nodes", "n1")
    assert int(after["metadata"]["resourceVersion"]) > rv
    assert after["status"]["lastHeartbeat"] > body["status"]["lastHeartbeat"]


async def test_a_stale_last_heartbeat_is_refreshed(
    api: server_support.Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.create_node("n1")
    await beat(api, "n1", FULL)
    rv = (await api.get("nodes", "n1"))["metadata"]["resourceVersion"]
    monkeypatch.setattr(lifecycle, "NODE_STATUS_REFRESH", timedelta(0))
    await beat(api, "n1", FULL)
    assert (await api.get("nodes", "n1"))["metadata"]["resourceVersion"] != rv


async def test_dry_run_unknown_and_deleted_nodes(api: server_support.Api) -> None:
    await api.create_node("n1")
    await beat(api, "n1", FULL)
    before = await last_heartbeat(api, "n1")
    await beat(api, "n1", None, dryRun="All")
    assert await last_heartbeat(api, "n1") == before

    for method in ("GET", "POST"):
        status, body, _ = await api.call(method, "/api/v1/nodes/ghost/heartbeat")
        assert status == 404, body

    status, body, _ = await api.call("DELETE", "/api/v1/nodes/n1")
    assert status == 204, body
    await api.create_node("n1")
    assert await last_heartbeat(api, "n1") is None  # the old node's lease went with it
