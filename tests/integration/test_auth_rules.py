"""Authentication and the node authorizer in detail: bad credentials, tokens, joining,
what a node credential may do, the relay's per-node secret, the audit line, bootstrap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import auth_support
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from auth_support import Secured, bearer
from server_support import make_config, start_server_process, stop_server_process
from structlog.testing import capture_logs
from test_client_support import eventually

from caravanserai.api.base import utcnow
from caravanserai.server.app import create_app
from caravanserai.server.authn import digest
from caravanserai.store.postgres import PostgresStore

secured = pytest.fixture(auth_support.serve_secured, name="secured")
PROBLEM = "application/problem+json"


def assert_problem(status: int, body: Any, resp: aiohttp.ClientResponse, want: int) -> None:
    assert status == want, body
    assert resp.content_type == PROBLEM
    assert body["status"] == want and body["detail"]


async def raw_request(secured: Secured, head: bytes) -> tuple[int, bytes]:
    """Send bytes a client library would refuse to send; returns (status, body)."""
    server = secured.api.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head)
        async with asyncio.timeout(10):
            data = await reader.readuntil(b"\r\n\r\n")
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                data += await reader.read()
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest


# -- bad credentials -------------------------------------------------------------------------


async def test_missing_unknown_and_malformed_credentials_are_401(secured: Secured) -> None:
    api = secured.api
    for headers in ({}, bearer("cara_unknown"), {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": "Bearer"}, bearer("x" * 300)):
        status, body, resp = await api.call("POST", "/api/v1/projects", {"x": 1},
                                            headers=headers)
        assert_problem(status, body, resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    status, body = await raw_request(
        secured,
        b"DELETE /api/v1/projects/pa HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe\xc3\x28\r\n\r\n",
    )
    # Header text that is not valid Unicode is refused before authentication (inputs.py).
    assert status == 400 and b"Authorization" in body, body
    # A 1 MB token: refused before any handler (the header limit), never a 500.
    status, body = await raw_request(
        secured,
        b"DELETE /api/v1/projects/pa HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer " + b"a" * (1 << 20) + b"\r\n\r\n",
    )
    assert 400 <= status < 500
    assert (await secured.admin("GET", "/api/v1/projects/pa"))["metadata"]["name"] == "pa"
    assert [p["metadata"]["name"]
            for p in (await secured.admin("GET", "/api/v1/projects"))["items"]] == ["pa", "pb"]


async def test_revoked_and_expired_tokens_are_401_and_change_nothing(secured: Secured) -> None:
    created = await secured.admin("POST", "/api/v1/tokens", {"name": "ci", "role": "edit"})
    token = created["token"]
    status, _, _ = await secured.api.call("GET", "/api/v1/projects", headers=bearer(token))
    assert status == 200
    await secured.admin("DELETE", "/api/v1/tokens/ci")
    status, body, resp = await secured.api.call(
        "POST", "/api/v1/projects", {"apiVersion": "caravanserai/v1", "kind": "Project",
                                     "metadata": {"name": "late"}, "spec": {"services": [
                                         {"name": "a", "image": "x"}]}},
        headers=bearer(token),
    )
    assert_problem(status, body, resp, 401)

    await secured.tokens.create("old", "admin", digest("cara_old-secret"),
                                expires_at=utcnow() - timedelta(seconds=1))
    status, body, resp = await secured.api.call(
        "DELETE", "/api/v1/projects/pa", headers=bearer("cara_old-secret")
    )
    assert_problem(status, body, resp, 401)
    assert "expired" in body["detail"]
    listed = await secured.admin("GET", "/api/v1/projects")
    assert [p["metadata"]["name"] for p in listed["items"]] == ["pa", "pb"]


async def test_a_revocation_reaches_a_server_that_remembers_the_token(
    secured: Secured, database_url: str
) -> None:
    """Servers remember tokens they checked; revoking one on another server (replica or
    worker) still ends it there — the revocation is announced to every server."""
    created = await secured.admin("POST", "/api/v1/tokens", {"name": "ci", "role": "view"})
    other_store = await PostgresStore.open(database_url, pool_min=1, pool_max=2)
    other = TestServer(
        create_app(make_config(database_url, insecure_allow_anonymous=False), other_store),
        host="127.0.0.1",
    )
    await other.start_server()
    url = str(other.make_url("/api/v1/projects"))
    try:
        async def status_on_other() -> int:
            async with secured.api.session.get(url, headers=bearer(created["token"])) as resp:
                return resp.status

        assert await status_on_other() == 200  # now remembered there
        await secured.admin("DELETE", "/api/v1/tokens/ci")  # through the first server

        async def refused() -> bool:
            return await status_on_other() == 401

        # The announcement travels as a watch event does: not before the revoke's commit.
        await eventually(refused)
    finally:
        await other.close()
        await other_store.close()


async def test_forbidden_names_the_role_and_the_verb(secured: Secured) -> None:
    status, body, resp = await secured.as_("view", "DELETE", "/api/v1/projects/pa")
    assert_problem(status, body, resp, 403)
    assert "view" in body["detail"] and "delete" in body["detail"]
    status, body, resp = await secured.as_("edit", "DELETE", "/api/v1/nodes/node-a")
    assert_problem(status, body, resp, 403)
    assert "edit" in body["detail"] and "delete" in body["detail"]


# -- tokens ----------------------------------------------------------------------------------


async def test_token_create_list_revoke(secured: Secured) -> None:
    created = await secured.admin("POST", "/api/v1/tokens",
                                  {"name": "grafana", "role": "view", "ttlSeconds": 3600})
    assert created["token"].startswith("cara_") and created["expiresAt"]
    listed = await secured.admin("GET", "/api/v1/tokens")
    assert "grafana" in [t["name"] for t in listed["items"]]
    assert created["token"] not in json.dumps(listed) and "token" not in listed["items"][0]
    assert {"node:node-a", "node:node-b"} <= {t["name"] for t in listed["items"]}
    status, body, resp = await secured.as_("admin", "POST", "/api/v1/tokens",
                                           {"name": "grafana", "role": "view"})
    assert_problem(status, body, resp, 409)
    status, body, resp = await secured.as_("admin", "POST", "/api/v1/tokens",
                                           {"name": "x", "role": "node"})
    assert_problem(status, body, resp, 422)
    status, body, resp = await secured.as_("admin", "DELETE", "/api/v1/tokens/nope")
    assert_problem(status, body, resp, 404)
    # The database never holds a secret.
    async with secured.api.store.connection() as conn:
        rows = await (await conn.execute("SELECT * FROM cara_tokens")).fetchall()
    assert created["token"] not in repr(rows)


# -- joining ---------------------------------------------------------------------------------


async def test_join_token_admits_new_nodes_but_never_takes_over_one(secured: Secured) -> None:
    await secured.join("node-c")
    status, body, resp = await secured.as_("node-c", "GET", "/api/v1/nodes/node-c")
    assert status == 404  # allowed (it has not registered yet)
    # A second join of node-a with the join token would impersonate it: refused.
    status, body, resp = await secured.as_("join", "POST", "/api/v1/nodes/node-a/join")
    assert_problem(status, body, resp, 409)
    status, _, _ = await secured.as_("node-a", "GET", "/api/v1/nodes/node-a")
    assert status == 200  # node-a's credential still works
    # The join token can do nothing else.
    status, body, resp = await secured.as_("join", "GET", "/api/v1/projects")
    assert_problem(status, body, resp, 403)
    # Revoked, it admits no one and creates nothing.
    await secured.admin("DELETE", "/api/v1/tokens/join")
    status, body, resp = await secured.as_("join", "POST", "/api/v1/nodes/node-d/join")
    assert_problem(status, body, resp, 401)
    names = {t["name"] for t in (await secured.admin("GET", "/api/v1/tokens"))["items"]}
    assert "node:node-d" not in names
    # An admin may re-join a node (a re-installed machine): the old credential dies.
    old = secured.credentials["node-a"]
    await secured.join("node-a", who="admin")
    status, _, _ = await secured.api.call("GET", "/api/v1/nodes/node-a", headers=bearer(old))
    assert status == 401


# -- the node authorizer ---------------------------------------------------------------------


async def test_a_node_may_not_cordon_or_uncordon_itself(secured: Secured) -> None:
    node = await secured.admin("GET", "/api/v1/nodes/node-a")
    node["spec"]["unschedulable"] = True
    status, body, resp = await secured.as_("node-a", "PUT", "/api/v1/nodes/node-a", node)
    assert_problem(status, body, resp, 403)
    assert "unschedulable" in body["detail"]
    node["spec"]["unschedulable"] = False
    node["metadata"]["labels"] = {"zone": "a"}
    status, body, _ = await secured.as_("node-a", "PUT", "/api/v1/nodes/node-a", node)
    assert status == 200, body
    # Cordoned by the admin, the node cannot lift it either.
    cordoned = await secured.admin("GET", "/api/v1/nodes/node-a")
    cordoned["spec"]["unschedulable"] = True
    await secured.admin("PUT", "/api/v1/nodes/node-a", cordoned)
    cordoned = await secured.admin("GET", "/api/v1/nodes/node-a")
    cordoned["spec"]["unschedulable"] = False
    status, body, resp = await secured.as_("node-a", "PUT", "/api/v1/nodes/node-a", cordoned)
    assert_problem(status, body, resp, 403)
    # Nor write its Node's status directly (only heartbeats, which keep an admin's Draining).
    status, body, resp = await secured.as_("node-a", "PUT", "/api/v1/nodes/node-a/status",
                                           cordoned)
    assert_problem(status, body, resp, 403)


@pytest.mark.parametrize("query", [
    {},
    {"fieldSelector": "status.nodeRef=node-b"},
    {"fieldSelector": "status.nodeRef!=node-a"},
    {"fieldSelector": "status.phase=Running"},
    {"fieldSelector": "status.nodeRef=node-a", "nodeRef": "node-b"},
    {"labelSelector": "status.nodeRef=node-a"},
])
async def test_a_node_lists_and_watches_only_its_own_projects(
    secured: Secured, query: dict[str, str]
) -> None:
    for params in (query, {**query, "watch": "true"}):
        status, body, resp = await secured.as_("node-a", "GET", "/api/v1/projects",
                                               params=params)
        assert_problem(status, body, resp, 403)
        assert "fieldSelector=status.nodeRef=node-a" in body["detail"]
    status, body, _ = await secured.as_(
        "node-a", "GET", "/api/v1/projects",
        params={"fieldSelector": "status.nodeRef=node-a,status.phase=Running"},
    )
    assert status == 200 and [p["metadata"]["name"] for p in body["items"]] == ["pa"]


async def test_a_node_writes_status_only_of_its_own_projects(secured: Secured) -> None:
    pb = await secured.admin("GET", "/api/v1/projects/pb")
    pa = await secured.admin("GET", "/api/v1/projects/pa")
    for method, path, body in (
        ("GET", "/api/v1/projects/pb", None),
        ("PUT", "/api/v1/projects/pb/status", {**pb, "status": {**pb["status"],
                                                                "phase": "Failed"}}),
        ("PATCH", "/api/v1/projects/pb/status", {"phase": "Failed"}),
        ("PUT", "/api/v1/projects/pa", pa),  # its own project, but the spec is not the node's
        ("DELETE", "/api/v1/projects/pa", None),
        ("POST", "/api/v1/nodes/node-b/heartbeat", {"state": "Draining"}),
        ("GET", "/api/v1/nodes/node-b", None),
        ("DELETE", "/api/v1/nodes/node-a", None),
        ("GET", "/api/v1/nodes", None),
        ("GET", "/api/v1/projects/ghost", None),
        ("GET", "/api/v1/projects/pa/logs", None),
        ("POST", "/api/v1/tokens", {"name": "mine", "role": "admin"}),
    ):
        status, answer, resp = await secured.as_("node-a", method, path, body)
        assert_problem(status, answer, resp, 403)
    # Moving its own project to another node is not a status write a node may make.
    moved = {**pa, "status": {**pa["status"], "nodeRef": "node-b"}}
    status, answer, resp = await secured.as_("node-a", "PUT", "/api/v1/projects/pa/status", moved)
    assert_problem(status, answer, resp, 403)
    status, answer, resp = await secured.as_(
        "node-a", "PATCH", "/api/v1/projects/pa/status", {"phase": "Scheduled", "nodeRef": "node-b"}
    )
    assert_problem(status, answer, resp, 403)
    assert (await secured.admin("GET", "/api/v1/projects/pb")) == pb
    assert (await secured.admin("GET", "/api/v1/projects/pa")) == pa
    # Its own: allowed.
    status, answer, _ = await secured.as_("node-a", "PATCH", "/api/v1/projects/pa/status",
                                          {"phase": "Failed", "reason": "Crashed"})
    assert status == 204, answer


# -- the relay's per-node secret --------------------------------------------------------------


async def test_the_relay_presents_the_nodes_secret_never_the_callers_token(
    secured: Secured,
) -> None:
    seen: list[str | None] = []

    async def logs(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(text="hello\n")

    app = web.Application()
    app.router.add_get("/api/v1/logs/{project}/{service}", logs)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        status, _, _ = await secured.as_("node-a", "POST", "/api/v1/nodes/node-a/heartbeat",
                                         {"network": {"ip": "127.0.0.1", "agentPort": port}})
        assert status == 204
        for who in ("view", "admin"):
            status, text, _ = await secured.as_(who, "GET", "/api/v1/projects/pa/logs")
            assert status == 200 and text == "hello\n"
    finally:
        await runner.cleanup()
    assert seen == [f"Bearer {secured.agent_secrets['node-a']}"] * 2
    for token in secured.credentials.values():
        assert f"Bearer {token}" not in seen


# -- audit -----------------------------------------------------------------------------------


async def test_every_mutating_request_is_audited(secured: Secured) -> None:
    with capture_logs() as logs:
        await secured.as_("view", "DELETE", "/api/v1/projects/pa")
        await secured.as_("edit", "DELETE", "/api/v1/projects/no-such")
        await secured.as_("view", "GET", "/api/v1/projects")
    audit = [(e["who"], e["verb"], e["resource"], e["name"], e["result"])
             for e in logs if e["event"] == "audit"]
    assert audit == [
        ("view (view)", "delete", "projects", "pa", 403),
        ("edit (edit)", "delete", "projects", "no-such", 404),
    ]


# -- bootstrap (the real program) -------------------------------------------------------------


def test_first_start_prints_an_admin_token_once(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "CARA_INSECURE_ALLOW_ANONYMOUS": "false"}
    server = start_server_process(env, cwd=tmp_path)
    try:
        import requests

        assert requests.get(f"{server.url}/api/v1/projects", timeout=10).status_code == 401
        server.wait_for_line("set-token")  # printed right after "listening"
        assert stop_server_process(server) == 0
        text = "".join(server.lines)
        match = re.search(r"caractrl config set-token (cara_\S+)", text)
        assert match, text
        token = match.group(1)
        assert text.count(token) == 1

        server = start_server_process(env, cwd=tmp_path)
        resp = requests.get(f"{server.url}/api/v1/projects", timeout=10,
                            headers=bearer(token))
        assert resp.status_code == 200
    finally:
        stop_server_process(server)
    assert "set-token" not in "".join(server.lines)  # the second start prints nothing


def test_bootstrap_token_from_the_environment(database_url: str, tmp_path: Path) -> None:
    import requests

    env = {"DATABASE_URL": database_url, "CARA_INSECURE_ALLOW_ANONYMOUS": "false",
           "CARA_BOOTSTRAP_TOKEN": "cara_chosen-by-the-operator"}
    server = start_server_process(env, cwd=tmp_path)
    try:
        resp = requests.get(f"{server.url}/api/v1/tokens", timeout=10,
                            headers=bearer("cara_chosen-by-the-operator"))
        assert resp.status_code == 200 and resp.json()["items"][0]["role"] == "admin"
    finally:
        stop_server_process(server)
    assert "cara_chosen-by-the-operator" not in "".join(server.lines)


def test_anonymous_mode_warns_at_every_start(database_url: str, tmp_path: Path) -> None:
    server = start_server_process({"DATABASE_URL": database_url}, cwd=tmp_path,
                                  args=["--insecure-allow-anonymous"])
    try:
        server.wait_for_line('"auth.anonymous_allowed"')  # it follows the "listening" line
    finally:
        stop_server_process(server)
    events = [json.loads(line) for line in server.lines if line.startswith("{")]
    warning = next(e for e in events if e["event"] == "auth.anonymous_allowed")
    assert warning["level"] == "warning" and "admin" in warning["message"]
