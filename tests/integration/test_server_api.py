"""cara-server over HTTP: every route and status code, problem details, the phase machine.

Real PostgreSQL (the ``store`` fixture), a real aiohttp server on a port (``api``).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
import server_support
from server_support import Api, manifest, node_manifest

PROBLEM = "application/problem+json"
JSON = {"Content-Type": "application/json"}

api = pytest.fixture(server_support.serve_api, name="api")


def assert_problem(resp: Any, body: Any, status: int) -> None:
    assert resp.status == status, body
    assert resp.content_type == PROBLEM, resp.content_type
    assert body["status"] == status
    assert body["type"].startswith("https://caravanserai.dev/problems/") or body["type"] == (
        "about:blank"
    )
    assert body["title"]
    assert "detail" in body
    assert "Traceback" not in json.dumps(body)


def phase_of(obj: dict[str, Any]) -> str:
    return str(obj["status"]["phase"])


async def put_on_node(api: Api, project: str, node: str, phase: str = "Running") -> None:
    assert await api.patch_phase(project, "Scheduled", nodeRef=node) == 204
    if phase != "Scheduled":
        assert await api.patch_phase(project, phase) == 204


# -- the seeds' example --------------------------------------------------------------------


async def test_seed_curl_example_creates_pending_then_409(api: Api) -> None:
    # Exactly the body of the seeds' `curl -X POST .../api/v1/projects` example.
    body = (
        '{"apiVersion": "caravanserai/v1", "kind": "Project", '
        '"metadata": {"name": "nginx-demo"}, '
        '"spec": {"services": [{"name": "web", "image": "nginx:alpine"}]}}'
    )
    headers = {"Content-Type": "application/json"}
    status, created, resp = await api.call("POST", "/api/v1/projects", data=body, headers=headers)
    assert status == 201, created
    assert resp.content_type == "application/json"
    assert resp.headers["Location"] == "/api/v1/projects/nginx-demo"
    assert created["apiVersion"] == "caravanserai/v1" and created["kind"] == "Project"
    assert phase_of(created) == "Pending"
    meta = created["metadata"]
    assert meta["name"] == "nginx-demo" and meta["generation"] == 1
    assert meta["uid"] and meta["creationTimestamp"] and int(meta["resourceVersion"]) > 0
    [condition] = created["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Phase", "True", "Created",
    )
    assert [h["phase"] for h in created["status"]["history"]] == ["Pending"]

    _, problem, resp = await api.call("POST", "/api/v1/projects", data=body, headers=headers)
    assert_problem(resp, problem, 409)
    assert problem["detail"] == 'project "nginx-demo" already exists'

    assert await api.get("projects", "nginx-demo") == created


async def test_create_ignores_client_status_and_server_metadata(api: Api) -> None:
    body = manifest("sneaky")
    body["status"] = {"phase": "Running", "nodeRef": "somewhere"}
    body["metadata"].update(
        uid="11111111-1111-1111-1111-111111111111", resourceVersion="999", generation=7,
        creationTimestamp="2000-01-01T00:00:00Z", deletionTimestamp="2000-01-01T00:00:00Z",
    )
    status, created, _ = await api.call("POST", "/api/v1/projects", body)
    assert status == 201, created
    assert created["status"]["phase"] == "Pending" and "nodeRef" not in created["status"]
    meta = created["metadata"]
    assert meta["uid"] != body["metadata"]["uid"]
    assert meta["generation"] == 1 and "deletionTimestamp" not in meta
    assert meta["creationTimestamp"] != "2000-01-01T00:00:00Z"

    node = node_manifest("n1")
    node["status"] = {"state": "Ready"}
    status, created_node, _ = await api.call("POST", "/api/v1/nodes", node)
    assert status == 201
    assert created_node["status"]["state"] == "NotReady"
    [ready] = created_node["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "NodeRegistered")


async def test_invalid_object_is_422_naming_every_bad_field(api: Api) -> None:
    body = manifest("Bad_Name")
    body["spec"]["services"].append({"name": "db", "image": ""})
    body["spec"]["services"][0]["imagee"] = "typo"
    _, problem, resp = await api.call("POST", "/api/v1/projects", body)
    assert_problem(resp, problem, 422)
    fields = {e["field"] for e in problem["errors"]}
    assert {"metadata.name", "spec.services[1].image", "spec.services[0].imagee"} <= fields
    assert all(e["message"] for e in problem["errors"])

    __, problem, resp = await api.call(
        "POST", "/api/v1/projects", {"apiVersion": "caravanserai/v1", "kind": "Node",
                                     "metadata": {"name": "x"}, "spec": {}}
    )
    assert_problem(resp, problem, 422)
    assert any(e["field"] == "kind" for e in problem["errors"])


async def test_malformed_unsupported_and_oversized_bodies(api: Api) -> None:
    _, problem, resp = await api.call(
        "POST", "/api/v1/projects", data='{"apiVersion": ', headers=JSON
    )
    assert_problem(resp, problem, 400)
    assert "malformed JSON" in problem["detail"]

    _, problem, resp = await api.call(
        "POST", "/api/v1/projects", data="a: [b", headers={"Content-Type": "application/yaml"}
    )
    assert_problem(resp, problem, 400)
    assert "YAML" in problem["detail"]

    _, problem, resp = await api.call(
        "POST", "/api/v1/projects", data="[1, 2]", headers={"Content-Type": "application/json"}
    )
    assert_problem(resp, problem, 400)

    _, problem, resp = await api.call(
        "POST", "/api/v1/projects", data="", headers={"Content-Type": "application/json"}
    )
    assert_problem(resp, problem, 400)

    _, problem, resp = await api.call(
        "POST", "/api/v1/projects", data="name=x", headers={"Content-Type": "text/plain"}
    )
    assert_problem(resp, problem, 415)

    big = json.dumps(manifest("big") | {"pad": "x" * (api.config.max_body_bytes + 10)})
    _, problem, resp = await api.call(
        "POST", "/api/v1/projects", data=big, headers={"Content-Type": "application/json"}
    )
    assert_problem(resp, problem, 413)

    # NaN is not JSON, and a YAML bomb is refused rather than expanded.
    _, problem, resp = await api.call(
        "POST", "/api/v1/projects", data='{"a": NaN}', headers={"Content-Type": "application/json"}
    )
    assert_problem(resp, problem, 400)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    __, problem, resp = await api.call(
        "POST", "/api/v1/projects", data=bomb, headers={"Content-Type": "application/yaml"}
    )
    assert_problem(resp, problem, 400)


async def test_yaml_body_is_accepted(api: Api) -> None:
    text = (
        "apiVersion: caravanserai/v1\nkind: Project\nmetadata:\n  name: from-yaml\n"
        "  labels: {team: a}\nspec:\n  services:\n    - name: web\n      image: nginx:alpine\n"
        "  expireAt: 2030-01-01T00:00:00Z\n"
    )
    status, created, _ = await api.call(
        "POST", "/api/v1/projects", data=text, headers={"Content-Type": "application/yaml"}
    )
    assert status == 201, created
    assert created["metadata"]["labels"] == {"team": "a"}
    assert created["spec"]["expireAt"] == "2030-01-01T00:00:00Z"


# -- get, list, selectors, pagination ------------------------------------------------------


async def test_get_404_and_unknown_routes_are_problems(api: Api) -> None:
    _, problem, resp = await api.call("GET", "/api/v1/projects/nope")
    assert_problem(resp, problem, 404)
    assert problem["detail"] == 'project "nope" not found'
    _, problem, resp = await api.call("GET", "/api/v1/nodes/nope")
    assert_problem(resp, problem, 404)
    _, problem, resp = await api.call("GET", "/api/v2/whatever")
    assert_problem(resp, problem, 404)
    _, problem, resp = await api.call("DELETE", "/api/v1/projects")
    assert_problem(resp, problem, 405)
    assert "GET" in resp.headers["Allow"] and "POST" in resp.headers["Allow"]
    __, problem, resp = await api.call("PATCH", "/api/v1/nodes/x/status", {"phase": "Running"})
    assert_problem(resp, problem, 405)


async def test_list_filters_and_selectors(api: Api) -> None:
    await api.create_node("n1")
    labelled = [("a", {"team": "x"}), ("b", {"team": "y"}), ("c", {}), ("d", {"team": "x"})]
    for name, labels in labelled:
        body = manifest(name)
        body["metadata"]["labels"] = labels
        status, _, _ = await api.call("POST", "/api/v1/projects", body)
        assert status == 201
    await put_on_node(api, "a", "n1", "Running")
    await put_on_node(api, "b", "n1", "Scheduled")
    await put_on_node(api, "c", "n1", "Running")
    assert await api.patch_phase("c", "Failed") == 204

    async def listed(params: Any) -> list[str]:
        status, body, _ = await api.call("GET", "/api/v1/projects", params=params)
        assert status == 200, body
        assert body["kind"] == "ProjectList" and body["apiVersion"] == "caravanserai/v1"
        assert int(body["metadata"]["resourceVersion"]) > 0
        return [item["metadata"]["name"] for item in body["items"]]

    assert await listed({}) == ["a", "b", "c", "d"]
    assert await listed([("phase", "Running"), ("phase", "Scheduled")]) == ["a", "b"]
    assert await listed({"phase": "Running,Failed"}) == ["a", "c"]
    assert await listed({"nodeRef": "n1"}) == ["a", "b", "c"]
    assert await listed([("nodeRef", "n1"), ("phase", "Failed")]) == ["c"]
    assert await listed({"labelSelector": "team=x"}) == ["a", "d"]
    assert await listed({"labelSelector": "team!=x"}) == ["b", "c"]
    assert await listed({"labelSelector": "team in (x,y)"}) == ["a", "b", "d"]
    assert await listed({"labelSelector": "team notin (x)"}) == ["b", "c"]
    assert await listed({"labelSelector": "team"}) == ["a", "b", "d"]
    assert await listed({"labelSelector": "!team"}) == ["c"]
    assert await listed({"fieldSelector": "metadata.name=b"}) == ["b"]
    assert await listed({"fieldSelector": "status.phase!=Running"}) == ["b", "c", "d"]
    assert await listed({"fieldSelector": "status.nodeRef=n1,status.phase=Running"}) == ["a"]

    for bad in ({"phase": "Bogus"}, {"labelSelector": "a b c"}, {"fieldSelector": "spec.x=1"},
                {"limit": "0"}, {"limit": "x"}, {"watch": "maybe"}):
        _, problem, resp = await api.call("GET", "/api/v1/projects", params=bad)
        assert_problem(resp, problem, 400)
    _, problem, resp = await api.call("GET", "/api/v1/projects", params={"phase": "Bogus"})
    assert "Pending" in problem["detail"]


async def test_pagination_is_consistent_at_one_revision(api: Api) -> None:
    for i in range(7):
        await api.create_project(f"p{i}")
    status, page1, _ = await api.call("GET", "/api/v1/projects", params={"limit": "3"})
    assert status == 200
    revision = page1["metadata"]["resourceVersion"]
    token = page1["metadata"]["continue"]
    # Changes after the first page do not leak into later pages.
    await api.create_project("p3a")
    status, _, _ = await api.call("DELETE", "/api/v1/projects/p5")
    assert status == 204
    seen = [i["metadata"]["name"] for i in page1["items"]]
    while token:
        status, page, _ = await api.call(
            "GET", "/api/v1/projects", params={"limit": "3", "continue": token}
        )
        assert status == 200, page
        assert page["metadata"]["resourceVersion"] == revision
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
    assert seen == [f"p{i}" for i in range(7)]

    _, problem, resp = await api.call(
        "GET", "/api/v1/projects", params={"limit": "3", "continue": "garbage"}
    )
    assert_problem(resp, problem, 400)


async def test_nodes_crud_and_list(api: Api) -> None:
    created = await api.create_node("edge-1")
    _, problem, resp = await api.call("POST", "/api/v1/nodes", node_manifest("edge-1"))
    assert_problem(resp, problem, 409)
    assert problem["detail"] == 'node "edge-1" already exists'
    status, body, _ = await api.call("GET", "/api/v1/nodes")
    assert body["kind"] == "NodeList"
    assert [n["metadata"]["name"] for n in body["items"]] == ["edge-1"]

    update = node_manifest("edge-1", unschedulable=True)
    update["metadata"]["labels"] = {"zone": "a"}
    update["status"] = {"state": "Draining"}  # ignored by the spec PUT
    status, updated, _ = await api.call("PUT", "/api/v1/nodes/edge-1", update)
    assert status == 200, updated
    assert updated["spec"]["unschedulable"] is True
    assert updated["metadata"]["labels"] == {"zone": "a"}
    assert updated["status"] == created["status"]
    assert updated["metadata"]["generation"] == 2

    _, problem, resp = await api.call("PUT", "/api/v1/nodes/other", update)
    assert_problem(resp, problem, 400)
    assert problem["detail"] == 'metadata.name "edge-1" does not match URL path "other"'
    _, problem, resp = await api.call("PUT", "/api/v1/nodes/ghost", node_manifest("ghost"))
    assert_problem(resp, problem, 404)

    status, _, _ = await api.call("DELETE", "/api/v1/nodes/edge-1")
    assert status == 204
    _, problem, resp = await api.call("DELETE", "/api/v1/nodes/edge-1")
    assert_problem(resp, problem, 404)


# -- updates -------------------------------------------------------------------------------


async def test_put_spec_bumps_generation_and_respects_resource_version(api: Api) -> None:
    created = await api.create_project("app")
    body = manifest("app")
    body["spec"]["services"][0]["image"] = "nginx:1.27"
    body["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    status, updated, _ = await api.call("PUT", "/api/v1/projects/app", body)
    assert status == 200, updated
    assert updated["metadata"]["generation"] == 2
    assert updated["spec"]["services"][0]["image"] == "nginx:1.27"
    assert updated["status"]["phase"] == "Pending"

    # The same stale resourceVersion again: someone else wrote in between.
    _, problem, resp = await api.call("PUT", "/api/v1/projects/app", body)
    assert_problem(resp, problem, 409)

    # Omitting metadata.name takes the path's; an identical spec writes nothing.
    del body["metadata"]
    status, same, _ = await api.call("PUT", "/api/v1/projects/app", body)
    assert status == 200
    assert same["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]

    bad = manifest("app")
    bad["spec"]["services"] = []
    _, problem, resp = await api.call("PUT", "/api/v1/projects/app", bad)
    assert_problem(resp, problem, 422)
    assert problem["errors"][0]["field"] == "spec.services"


async def test_spec_update_redeploys_failed_and_is_refused_while_terminating(api: Api) -> None:
    await api.create_node("n1")
    await api.create_project("crashy")
    await put_on_node(api, "crashy", "n1", "Running")
    assert await api.patch_phase("crashy", "Failed", reason="ContainerCrashed") == 204

    body = manifest("crashy")
    body["spec"]["services"][0]["image"] = "nginx:fixed"
    status, updated, _ = await api.call("PUT", "/api/v1/projects/crashy", body)
    assert status == 200
    assert updated["status"]["phase"] == "Scheduled" and updated["status"]["nodeRef"] == "n1"
    assert updated["status"]["history"][-1]["reason"] == "SpecUpdated"

    # Failed without a node goes back to Pending for the scheduler.
    await api.create_project("nowhere")
    status, _, _ = await api.call("PUT", "/api/v1/projects/nowhere/status", {
        **manifest("nowhere"), "status": {"phase": "Failed"}})
    # Pending -> Failed is not an edge of the phase machine.
    assert status == 409

    status, accepted, _ = await api.call("DELETE", "/api/v1/projects/crashy")
    assert status == 202 and accepted["status"]["phase"] == "Terminating"
    body["spec"]["services"][0]["image"] = "nginx:other"
    _, problem, resp = await api.call("PUT", "/api/v1/projects/crashy", body)
    assert_problem(resp, problem, 409)
    assert "being deleted" in problem["detail"]


# -- the status subresource and the phase machine ------------------------------------------


async def test_patch_status_follows_the_phase_machine(api: Api) -> None:
    await api.create_node("n1")
    await api.create_project("web")
    # Pending cannot jump to Running; Scheduled needs a node.
    assert await api.patch_phase("web", "Running") == 409
    # Without a node to go to (409: a project already on one may leave nodeRef out).
    assert await api.patch_phase("web", "Scheduled") == 409
    assert await api.patch_phase("web", "Scheduled", nodeRef="n1") == 204
    assert await api.patch_phase("web", "Running", reason="ContainersRunning",
                                 message="All containers running") == 204
    # Idempotent: the same phase again changes nothing.
    before = await api.get("projects", "web")
    assert await api.patch_phase("web", "Running") == 204
    assert (await api.get("projects", "web"))["metadata"]["resourceVersion"] == (
        before["metadata"]["resourceVersion"]
    )
    status = before["status"]
    assert status["phase"] == "Running" and status["nodeRef"] == "n1"
    phase_cond = next(c for c in status["conditions"] if c["type"] == "Phase")
    assert phase_cond["reason"] == "ContainersRunning"
    assert phase_cond["message"] == "All containers running"
    assert [h["phase"] for h in status["history"]] == ["Pending", "Scheduled", "Running"]

    # Delete → Terminating; a late Running from the agent must not resurrect it.
    code, _, _ = await api.call("DELETE", "/api/v1/projects/web")
    assert code == 202
    assert await api.patch_phase("web", "Running") == 409
    assert await api.patch_phase("web", "Failed") == 409
    assert await api.patch_phase("web", "Pending") == 409
    assert (await api.get("projects", "web"))["status"]["phase"] == "Terminating"
    assert await api.patch_phase("web", "Terminated", reason="ResourcesRemoved") == 204
    # Terminated is final.
    for phase in ("Running", "Pending", "Terminating"):
        assert await api.patch_phase("web", phase) == 409

    code, problem, resp = await api.call("PATCH", "/api/v1/projects/web/status", {"phase": "Bogus"})
    assert_problem(resp, problem, 422)
    assert problem["errors"][0]["field"] == "phase"
    code, problem, resp = await api.call("PATCH", "/api/v1/projects/web/status", {})
    assert_problem(resp, problem, 422)
    code, problem, resp = await api.call(
        "PATCH", "/api/v1/projects/web/status", {"phase": "Running", "extra": 1}
    )
    assert_problem(resp, problem, 422)
    code, problem, resp = await api.call(
        "PATCH", "/api/v1/projects/ghost/status", {"phase": "Running"}
    )
    assert_problem(resp, problem, 404)


async def test_history_keeps_the_last_ten(api: Api) -> None:
    await api.create_node("n1")
    await api.create_project("flappy")
    for _ in range(8):
        assert await api.patch_phase("flappy", "Scheduled", nodeRef="n1") == 204
        assert await api.patch_phase("flappy", "Pending", reason="NodeNotReady") == 204
    status = (await api.get("projects", "flappy"))["status"]
    assert len(status["history"]) == 10
    assert status["history"][-1]["phase"] == "Pending"
    assert "nodeRef" not in status  # Pending means "on no node"


async def test_put_status_replaces_status_under_the_rules(api: Api) -> None:
    await api.create_node("n1")
    created = await api.create_project("svc")
    obj = dict(created)
    obj["status"] = {
        "phase": "Scheduled", "nodeRef": "n1",
        "conditions": [{"type": "Phase", "status": "True", "reason": "Scheduled",
                        "message": "placed on n1"}],
        "history": [],  # server-kept: ignored
    }
    status, stored, _ = await api.call("PUT", "/api/v1/projects/svc/status", obj)
    assert status == 200, stored
    assert stored["status"]["phase"] == "Scheduled" and stored["status"]["nodeRef"] == "n1"
    assert [h["phase"] for h in stored["status"]["history"]] == ["Pending", "Scheduled"]
    assert stored["status"]["history"][-1]["reason"] == "Scheduled"
    assert stored["spec"] == created["spec"]  # status writes never touch spec
    assert stored["metadata"]["generation"] == 1

    # Stale resourceVersion → 409; none → last writer wins under the phase machine.
    obj["status"] = {"phase": "Running", "nodeRef": "n1"}
    _, problem, resp = await api.call("PUT", "/api/v1/projects/svc/status", obj)
    assert_problem(resp, problem, 409)
    obj["metadata"] = {"name": "svc"}
    status, stored, _ = await api.call("PUT", "/api/v1/projects/svc/status", obj)
    assert status == 200 and stored["status"]["phase"] == "Running"

    # A status without the node a Running project needs is refused (409, as the other
    # rules of the phase machine).
    obj["status"] = {"phase": "Running"}
    _, problem, resp = await api.call("PUT", "/api/v1/projects/svc/status", obj)
    assert_problem(resp, problem, 409)

    # Node status PUT: the admin's way to drain (and the only way to un-drain).
    node = await api.get("nodes", "n1")
    node["status"]["state"] = "Draining"
    status, stored_node, _ = await api.call("PUT", "/api/v1/nodes/n1/status", node)
    assert status == 200 and stored_node["status"]["state"] == "Draining"


async def test_concurrent_agent_running_never_undoes_a_delete(api: Api) -> None:
    """REFERENCE §10.9: PATCH Running racing DELETE. Whatever the interleaving, once the
    project is Terminating it stays Terminating."""
    await api.create_node("n1")
    for i in range(10):
        name = f"race-{i}"
        await api.create_project(name)
        await put_on_node(api, name, "n1", "Scheduled")
        results = await asyncio.gather(
            api.call("DELETE", f"/api/v1/projects/{name}"),
            *(api.call("PATCH", f"/api/v1/projects/{name}/status", {"phase": "Running"})
              for _ in range(3)),
        )
        assert results[0][0] == 202
        assert {r[0] for r in results[1:]} <= {204, 409}
        assert (await api.get("projects", name))["status"]["phase"] == "Terminating"


async def test_concurrent_status_patches_lose_nothing(api: Api) -> None:
    """Heartbeats and spec updates racing: every write lands (atomic mutators)."""
    await api.create_node("busy")
    await asyncio.gather(*(
        api.call("POST", "/api/v1/nodes/busy/heartbeat",
                 {"state": "Ready", "capacity": {f"k{i}": str(i)}}) for i in range(20)
    ), api.call("PUT", "/api/v1/nodes/busy", node_manifest("busy", unschedulable=True)))
    node = await api.get("nodes", "busy")
    assert node["spec"]["unschedulable"] is True
    assert node["status"]["state"] == "Ready"
    assert int(node["metadata"]["resourceVersion"]) >= 22


# -- delete --------------------------------------------------------------------------------


async def test_delete_project_paths(api: Api) -> None:
    await api.create_node("n1")
    # No node: gone at once.
    await api.create_project("pending")
    status, body, _ = await api.call("DELETE", "/api/v1/projects/pending")
    assert status == 204 and body is None
    _, problem, resp = await api.call("GET", "/api/v1/projects/pending")
    assert_problem(resp, problem, 404)
    _, problem, resp = await api.call("DELETE", "/api/v1/projects/pending")
    assert_problem(resp, problem, 404)

    # On a node: 202, Terminating with a deletionTimestamp; a second delete is idempotent.
    await api.create_project("running")
    await put_on_node(api, "running", "n1", "Running")
    status, body, _ = await api.call("DELETE", "/api/v1/projects/running")
    assert status == 202
    assert body["status"]["phase"] == "Terminating" and body["status"]["nodeRef"] == "n1"
    assert body["metadata"]["deletionTimestamp"]
    assert body["status"]["history"][-1]["reason"] == "DeletionRequested"
    status, again, _ = await api.call("DELETE", "/api/v1/projects/running")
    assert status == 202
    assert again["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"]

    # A Failed project on a node is torn down too (REFERENCE §10.12), not dropped.
    await api.create_project("failed")
    await put_on_node(api, "failed", "n1", "Running")
    assert await api.patch_phase("failed", "Failed") == 204
    status, body, _ = await api.call("DELETE", "/api/v1/projects/failed")
    assert status == 202 and body["status"]["phase"] == "Terminating"

    # Terminated (the agent is done): removed at once.
    assert await api.patch_phase("failed", "Terminated") == 204
    status, _, _ = await api.call("DELETE", "/api/v1/projects/failed")
    assert status == 204

    # force: at once in any phase.
    status, _, _ = await api.call("DELETE", "/api/v1/projects/running", params={"force": "true"})
    assert status == 204
    _, problem, resp = await api.call("GET", "/api/v1/projects/running")
    assert_problem(resp, problem, 404)
    _, problem, resp = await api.call("DELETE", "/api/v1/projects/x", params={"force": "yes"})
    assert_problem(resp, problem, 400)


async def test_node_delete_refused_while_projects_assigned(api: Api) -> None:
    await api.create_node("n1")
    await api.create_project("a")
    await api.create_project("b")
    await put_on_node(api, "a", "n1", "Running")
    await put_on_node(api, "b", "n1", "Scheduled")
    _, problem, resp = await api.call("DELETE", "/api/v1/nodes/n1")
    assert_problem(resp, problem, 409)
    assert problem["detail"].startswith(
        'cannot delete node "n1": 2 project(s) still assigned (a, b)'
    )
    status, _, _ = await api.call("DELETE", "/api/v1/nodes/n1", params={"force": "true"})
    assert status == 204

    # A Failed project still holds its node (its containers may exist; the scheduler
    # counts it as load: caravanserai.api.phases.OCCUPYING_PHASES); a Pending one does not.
    await api.create_node("n2")
    await api.create_project("c")
    await put_on_node(api, "c", "n2", "Running")
    assert await api.patch_phase("c", "Failed") == 204
    _, problem, resp = await api.call("DELETE", "/api/v1/nodes/n2")
    assert_problem(resp, problem, 409)
    assert "(c)" in problem["detail"]
    assert await api.patch_phase("c", "Pending") == 204
    status, _, _ = await api.call("DELETE", "/api/v1/nodes/n2")
    assert status == 204


# -- heartbeat -----------------------------------------------------------------------------


async def test_heartbeat_merges_and_keeps_draining(api: Api) -> None:
    await api.create_node("n1")
    status, _, _ = await api.call("POST", "/api/v1/nodes/n1/heartbeat", {
        "state": "Ready",
        "network": {"ip": "10.0.0.5", "agentPort": 9090},
        "capacity": {"cpu": "4"},
        "info": {"agentVersion": "0.1.0"},
    })
    assert status == 204
    node = await api.get("nodes", "n1")
    st = node["status"]
    assert st["state"] == "Ready" and st["lastHeartbeat"]
    assert st["network"] == {"ip": "10.0.0.5", "agentPort": 9090}
    assert st["capacity"] == {"cpu": "4"} and st["info"]["agentVersion"] == "0.1.0"
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "AgentReady")

    # Empty body: timestamp only; partial network merges field by field.
    status, _, _ = await api.call("POST", "/api/v1/nodes/n1/heartbeat")
    assert status == 204
    status, _, _ = await api.call(
        "POST", "/api/v1/nodes/n1/heartbeat", {"network": {"dnsName": "n1.ts"}}
    )
    assert status == 204
    st2 = (await api.get("nodes", "n1"))["status"]
    assert st2["lastHeartbeat"] >= st["lastHeartbeat"]
    assert st2["network"] == {"ip": "10.0.0.5", "agentPort": 9090, "dnsName": "n1.ts"}
    assert st2["capacity"] == {"cpu": "4"}

    # An admin drains via status PUT; heartbeats saying Ready keep it Draining.
    node = await api.get("nodes", "n1")
    node["status"]["state"] = "Draining"
    status, _, _ = await api.call("PUT", "/api/v1/nodes/n1/status", node)
    assert status == 200
    status, _, _ = await api.call("POST", "/api/v1/nodes/n1/heartbeat", {"state": "Ready"})
    assert status == 204
    st3 = (await api.get("nodes", "n1"))["status"]
    assert st3["state"] == "Draining"
    assert st3["network"]["ip"] == "10.0.0.5"  # nothing else clobbered

    # NotReady from the agent: state and Ready condition agree.
    node = await api.get("nodes", "n1")
    node["status"]["state"] = "Ready"
    await api.call("PUT", "/api/v1/nodes/n1/status", node)
    await api.call("POST", "/api/v1/nodes/n1/heartbeat", {"state": "NotReady"})
    st4 = (await api.get("nodes", "n1"))["status"]
    ready = next(c for c in st4["conditions"] if c["type"] == "Ready")
    assert st4["state"] == "NotReady" and ready["status"] == "False"

    _, problem, resp = await api.call("POST", "/api/v1/nodes/n1/heartbeat", {"state": "Bogus"})
    assert_problem(resp, problem, 422)
    assert problem["errors"][0]["field"] == "state"
    _, problem, resp = await api.call(
        "POST", "/api/v1/nodes/n1/heartbeat", {"network": {"agentPort": "9090"}}
    )
    assert_problem(resp, problem, 422)
    assert problem["errors"][0]["field"] == "network.agentPort"
    _, problem, resp = await api.call("POST", "/api/v1/nodes/ghost/heartbeat", {})
    assert_problem(resp, problem, 404)
    assert problem["detail"] == 'node "ghost" not found'


# -- system routes -------------------------------------------------------------------------


async def test_health_ready_version_metrics(api: Api) -> None:
    status, text, resp = await api.call("GET", "/api/healthz")
    assert (status, text) == (200, "OK")
    status, text, _ = await api.call("GET", "/api/readyz")
    assert (status, text) == (200, "OK")
    status, version, _ = await api.call("GET", "/api/v1/version")
    assert status == 200
    assert version["apiVersion"] == "caravanserai/v1" and version["version"] and version["python"]

    await api.create_project("m")
    status, text, resp = await api.call("GET", "/metrics")
    assert status == 200 and resp.content_type == "text/plain"
    assert (
        'cara_http_requests_total{method="POST",route="/api/v1/projects",status="201"} 1.0'
        in text
    )
    assert "cara_http_request_duration_seconds_bucket" in text
    # The project's write, or the server's Created event about it that may follow.
    assert re.search(r"^cara_store_revision [12]\.0$", text, re.MULTILINE), text
    assert "cara_watches_open" in text

    status, doc, _ = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert "Project" in doc["components"]["schemas"]
    ops = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert ("patch", "/api/v1/projects/{name}/status") in ops
    assert ("post", "/api/v1/nodes/{name}/heartbeat") in ops


async def test_readyz_is_503_when_the_database_is_gone(api: Api, database_url: str) -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    # Make every pooled connection fail: terminate them and block new ones.
    dbname = str(conninfo_to_dict(database_url)["dbname"])
    admin = make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')  # type: ignore[arg-type]
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
        )
    try:
        _, problem, resp = await api.call("GET", "/api/readyz")
        assert_problem(resp, problem, 503)
        status, _text, _ = await api.call("GET", "/api/healthz")
        assert status == 200  # liveness does not depend on the database
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')  # type: ignore[arg-type]
    # Ready again once the pool reconnects (polling a condition, bounded).
    for _ in range(150):
        if (await api.call("GET", "/api/readyz"))[0] == 200:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("readyz did not recover")


async def test_routine_requests_log_at_debug_failures_at_info(api: Api) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        status, _, _ = await api.call("GET", "/api/v1/projects")
        assert status == 200
        status, _, _ = await api.call("GET", "/api/v1/projects/ghost")
        assert status == 404
    levels = {e["path"]: e["log_level"] for e in logs if e["event"] == "request"}
    assert levels == {"/api/v1/projects": "debug", "/api/v1/projects/ghost": "info"}
