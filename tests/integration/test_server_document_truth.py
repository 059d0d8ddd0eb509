"""What the schemathesis ``--checks all`` run found where the server and its OpenAPI document
disagreed (issue 12, item 6), as hand-written cases against the real server and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest
import server_support
from server_support import Api, manifest

api = pytest.fixture(server_support.serve_api, name="api")


def fields(body: Any) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


async def test_a_lease_gets_the_metadata_rules_of_every_kind(api: Api) -> None:
    lease = {"apiVersion": "caravanserai/v1", "kind": "Lease",
             "metadata": {"name": "l1", "labels": {"a": "*" * 64}, "annotations": {"": "x"}}}
    status, problem, _ = await api.call("POST", "/api/v1/leases", lease)
    assert status == 422, problem
    assert fields(problem) == ["metadata.labels[a]", "metadata.annotations[]"]


async def test_a_heartbeat_body_may_be_left_out_but_not_be_null(api: Api) -> None:
    await api.create_node("n1")
    status, _, _ = await api.call("POST", "/api/v1/nodes/n1/heartbeat")
    assert status == 204
    status, problem, _ = await api.call(
        "POST", "/api/v1/nodes/n1/heartbeat", data="null",
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and "not null" in problem["detail"]


async def test_a_condition_without_a_type_is_refused(api: Api) -> None:
    project = await api.create_project("p1")
    project["status"]["conditions"] = [{"type": "", "status": "True"}]
    status, problem, _ = await api.call("PUT", "/api/v1/projects/p1/status", project)
    assert status == 422 and fields(problem) == ["status.conditions[0].type"], problem


async def test_relaying_to_a_node_without_an_address_is_a_conflict(api: Api) -> None:
    body = manifest("p1")
    body["spec"]["services"].append({"name": "db", "image": "postgres:15"})
    status, _, _ = await api.call("POST", "/api/v1/projects", body)
    assert status == 201
    await api.create_node("n1")
    assert await api.patch_phase("p1", "Scheduled", nodeRef="n1") == 204
    # Which service: the project has two (409: it depends on the stored project).
    status, problem, _ = await api.call("GET", "/api/v1/projects/p1/logs")
    assert status == 409 and "service is required" in problem["detail"]
    status, problem, _ = await api.call("GET", "/api/v1/projects/p1/logs?service=web")
    assert status == 409 and "has not reported its address" in problem["detail"]


@pytest.mark.parametrize(
    "query",
    ["labelSelector=app%3Dweb%E3%80%80", "fieldSelector=metadata.name%3D(web)"],
)
async def test_selectors_outside_the_published_grammar_are_a_400(api: Api, query: str) -> None:
    status, problem, _ = await api.call("GET", f"/api/v1/projects?{query}")
    assert status == 400 and "selector" in problem["detail"], problem


async def test_a_merge_patch_may_name_the_object_or_leave_it_null(api: Api) -> None:
    await api.create_project("p1")
    status, body, _ = await api.call(
        "PATCH", "/api/v1/projects/p1", data='{"metadata": {"name": null, "labels": {"a": "b"}}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert status == 200 and body["metadata"]["labels"] == {"a": "b"}, body
