"""Every bad input a 4xx (issue 12, item 3): hand-written cases of what an abusive client
sent and got a 500 for, against the real server and PostgreSQL.

NUL and lone surrogates (PostgreSQL stores neither) anywhere in a body are a 422 naming the
field; in the path, a query parameter or a header a 400; undecodable continue tokens a 400;
a non-UTF-8 Authorization header a 400/401; and lists past their bounds a 422 naming them.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import quote

import pytest
import server_support
from server_support import Api, manifest, node_manifest

from caravanserai.api import validation as v

api = pytest.fixture(server_support.serve_api, name="api")

PROBLEM = "application/problem+json"


def fields(body: Any) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


def project_with(**changes: Any) -> dict[str, Any]:
    """The minimal project with ``changes`` merged into its spec's first service."""
    body = manifest("bad")
    body["spec"]["services"][0].update(changes)
    return body


# Manifests with a NUL in one place each, and the field the 422 must name.
NUL_MANIFESTS: list[tuple[dict[str, Any], str]] = [
    ({**manifest("bad"), "metadata": {"name": "bad", "annotations": {"a": "x\u0000y"}}},
     "metadata.annotations[a]"),
    ({**manifest("bad"), "metadata": {"name": "bad", "labels": {"a": "\u0000"}}},
     "metadata.labels[a]"),
    (project_with(env=[{"name": "A", "value": "\u0000"}]), "spec.services[0].env[0].value"),
    (project_with(command=["sh", "\u0000"]), "spec.services[0].command[1]"),
    (project_with(image="nginx\u0000"), "spec.services[0].image"),
    (project_with(env=[{"name": "A", "value": "\ud800"}]), "spec.services[0].env[0].value"),
]


@pytest.mark.parametrize(("body", "field"), NUL_MANIFESTS)
async def test_unstorable_text_in_a_manifest_is_a_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    # Sent as raw JSON so "\ud800" travels as the escape a client would write.
    data = json.dumps(body)
    status, problem, resp = await api.call(
        "POST", "/api/v1/projects", data=data, headers={"Content-Type": "application/json"}
    )
    assert status == 422, problem
    assert resp.content_type == PROBLEM
    assert field in fields(problem), problem
    # Nothing was stored.
    status, _, _ = await api.call("GET", "/api/v1/projects/bad")
    assert status == 404


async def test_unstorable_text_in_status_and_heartbeat_is_a_422(api: Api) -> None:
    await api.create_node("n1")
    await api.create_project("p1")
    status, body, _ = await api.call(
        "PATCH", "/api/v1/projects/p1/status", {"phase": "Scheduled", "nodeRef": "n\u0000"}
    )
    assert status == 422, body
    assert fields(body) == ["nodeRef"]
    status, body, _ = await api.call(
        "POST", "/api/v1/nodes/n1/heartbeat", {"state": "Ready", "x\u0000": 1}
    )
    assert status == 422, body
    status, body, _ = await api.call(
        "POST", "/api/v1/nodes/n1/heartbeat", {"state": "\u0000"}
    )
    assert status == 422, body
    assert fields(body) == ["state"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/projects/%00",
        "/api/v1/nodes/a%00b",
        "/api/v1/projects?fieldSelector=status.nodeRef%3D%00",
        "/api/v1/projects?labelSelector=a%3D%00",
        "/api/v1/projects?watch=true&resourceVersion=%00",
        "/api/v1/nodes?continue=%00",
    ],
)
async def test_unstorable_text_in_path_or_query_is_a_400(api: Api, path: str) -> None:
    async with api.session.get(api.url(path)) as resp:
        body = await resp.json(content_type=None)
    assert resp.status == 400, body
    assert resp.content_type == PROBLEM


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        _token(b"[" * 100_000 + b"]" * 100_000),  # RecursionError in json.loads
        _token(b'{"k":"Project","r":1e999,"n":"a"}'),  # int(inf): OverflowError
        _token(b'{"k":"Project","r":1,"n":"a\\u0000"}'),  # NUL reaching PostgreSQL
        _token(b'{"k":"Project","r":true,"n":"a"}'),
        _token(b'{"k":"Project","r":99999999999999999999999,"n":"a"}'),
        _token(b'{"k":"Project","r":1,"n":["a"]}'),
        _token(b"\xff\xfe"),
        _token(b"null"),
        "!!!",
    ],
)
async def test_undecodable_continue_tokens_are_a_400(api: Api, token: str) -> None:
    await api.create_project("p1")
    status, body, _ = await api.call(
        "GET", "/api/v1/projects", params={"limit": "1", "continue": token}
    )
    assert status == 400, body


async def _raw_request(api: Api, head: bytes) -> int:
    """Send a hand-made request (bytes aiohttp's client would not send); the status."""
    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(10):
            line = await reader.readline()
        return int(line.split()[1])
    finally:
        writer.close()


async def test_non_utf8_authorization_header_is_a_4xx(api: Api) -> None:
    status = await _raw_request(
        api,
        b"GET /api/v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status in (400, 401)


async def test_non_utf8_authorization_header_with_auth_on_is_a_4xx(
    store: Any, database_url: str
) -> None:
    from aiohttp.test_utils import TestServer

    from caravanserai.server.app import create_app

    config = server_support.make_config(database_url, api_token="s3cret")
    server = TestServer(create_app(config, store), host="127.0.0.1")
    await server.start_server()
    try:
        fake = Api.__new__(Api)
        fake.server = server
        status = await _raw_request(
            fake,
            b"GET /api/v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
            b"Connection: close\r\n\r\n",
        )
        assert status in (400, 401)
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("spec_change", "field"),
    [
        ({"services": [{"name": f"s{i}", "image": "nginx"} for i in range(v.MAX_SERVICES + 1)]},
         "spec.services"),
        ({"volumes": [{"name": f"v{i}"} for i in range(v.MAX_VOLUMES + 1)]}, "spec.volumes"),
        ({"ingress": [{"name": f"i{i}", "host": f"h{i}", "target": {"service": "web",
                                                                      "port": 80}}
                      for i in range(v.MAX_INGRESS + 1)]}, "spec.ingress"),
        ({"services": [{"name": "web", "image": "nginx",
                        "env": [{"name": f"E{i}"} for i in range(v.MAX_ENV + 1)]}]},
         "spec.services[0].env"),
        ({"services": [{"name": "web", "image": "nginx",
                        "ports": [{"containerPort": 1 + i} for i in range(v.MAX_PORTS + 1)]}]},
         "spec.services[0].ports"),
        ({"services": [{"name": "web", "image": "nginx",
                        "env": [{"name": "BIG", "value": "x" * (v.MAX_ARG_LENGTH + 1)}]}]},
         "spec.services[0].env[0].value"),
    ],
)
async def test_counts_and_sizes_past_their_bounds_are_a_422_naming_the_field(
    api: Api, spec_change: dict[str, Any], field: str
) -> None:
    body = manifest("big")
    body["spec"].update(spec_change)
    status, problem, _ = await api.call("POST", "/api/v1/projects", body)
    assert status == 422, problem
    assert field in fields(problem), problem


async def test_too_many_labels_and_bad_label_syntax_are_a_422(api: Api) -> None:
    labels = {f"k{i}": "v" for i in range(v.MAX_LABELS + 1)}
    body = node_manifest("n1")
    body["metadata"]["labels"] = labels
    status, problem, _ = await api.call("POST", "/api/v1/nodes", body)
    assert status == 422, problem
    assert fields(problem) == ["metadata.labels"]
    body["metadata"]["labels"] = {"-bad": "x", "ok": "-bad"}
    status, problem, _ = await api.call("POST", "/api/v1/nodes", body)
    assert status == 422, problem
    assert fields(problem) == ["metadata.labels[-bad]", "metadata.labels[ok]"]


async def test_within_the_bounds_is_accepted(api: Api) -> None:
    body = manifest("ok")
    body["metadata"]["labels"] = {f"k{i}": "v" for i in range(v.MAX_LABELS)}
    body["spec"]["services"][0]["env"] = [{"name": f"E{i}", "value": "x"} for i in range(50)]
    status, problem, _ = await api.call("POST", "/api/v1/projects", body)
    assert status == 201, problem


@pytest.mark.parametrize("name", ["a%00", quote("é"), "x" * 300])
async def test_bad_names_in_the_path_are_4xx(api: Api, name: str) -> None:
    for method in ("GET", "DELETE"):
        async with api.session.request(method, api.url(f"/api/v1/projects/{name}")) as resp:
            assert 400 <= resp.status < 500, resp.status


# -- names and hosts that cannot collide (item 4) ---------------------------------------------


async def test_projects_whose_docker_names_collide_are_refused_naming_the_other(
    api: Api,
) -> None:
    status, body, _ = await api.call("POST", "/api/v1/projects", manifest(
        "a", services=[{"name": "b-c", "image": "nginx"}], volumes=[{"name": "b-data"}]))
    assert status == 201, body
    # Container a-b-c.
    status, body, _ = await api.call("POST", "/api/v1/projects", manifest(
        "a-b", services=[{"name": "c", "image": "nginx"}]))
    assert status == 409, body
    assert '"a-b-c"' in body["detail"] and 'project "a"' in body["detail"]
    # Volume cara-a-b-data (the other direction: the shorter name comes second).
    status, body, _ = await api.call("POST", "/api/v1/projects", manifest(
        "a-b", services=[{"name": "x", "image": "nginx"}], volumes=[{"name": "data"}]))
    assert status == 409, body
    assert '"cara-a-b-data"' in body["detail"]
    status, body, _ = await api.call("POST", "/api/v1/projects", manifest(
        "a-b", services=[{"name": "x", "image": "nginx"}]))
    assert status == 201, body
    # An update of "a" that would now meet "a-b"'s container a-b-x.
    current = await api.get("projects", "a")
    current["spec"]["services"].append({"name": "b-x", "image": "nginx"})
    status, body, _ = await api.call("PUT", "/api/v1/projects/a", current)
    assert status == 409, body
    assert 'project "a-b"' in body["detail"]


async def test_ingress_hosts_are_unique_across_the_cluster(api: Api) -> None:
    def rule(host: str) -> dict[str, Any]:
        return {"name": "www", "host": host, "target": {"service": "web", "port": 80}}

    await api.create_project("one", ingress=[rule("shop"), {**rule("shop.example.com"),
                                                           "name": "ext"}])
    for host in ("shop", "Shop.Example.Com."):
        status, body, _ = await api.call(
            "POST", "/api/v1/projects", manifest("two", ingress=[rule(host.lower().rstrip("."))])
        )
        assert status == 409, body
        assert 'project "one"' in body["detail"]
    await api.create_project("two", ingress=[rule("other")])
    # Once "one" is being deleted its hosts are free again.
    status, _, _ = await api.call("DELETE", "/api/v1/projects/one")
    assert status in (200, 202, 204), status
    await api.create_project("three", ingress=[rule("shop")])
