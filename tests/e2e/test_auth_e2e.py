"""e2e: a cluster that needs tokens. Two agents, each on its own private Docker engine, join
with a join token and run projects; then node A's own credential (from its data directory)
tries to read, watch and change node B's projects and Node, and gets 403 every time;
``caractrl logs`` works for a ``view`` token; the port-forward tunnel (what ``caractrl
port-forward`` opens per connection) for ``edit``, and is 403 for ``view``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import aiodocker
import aiohttp
import pytest
from agent_e2e_support import (
    BIN,
    WEB,
    AgentHandle,
    Agents,
    manifest,
    remove_node_objects,
    unique,
    wait_phase,
)
from cluster_e2e_support import ServerHandle, second_engine, start_server, wait_node_state

from caravanserai.api import NodeState
from caravanserai.client import CaravanseraiClient

ADMIN = "cara_e2e-admin-token"
JOIN = "cara_e2e-join-token"
SECOND_ENGINE = os.environ.get("CARA_E2E_SECOND_ENGINE", "node2")


@pytest.fixture(scope="session")
def second_docker_host(docker_host: str, skip_or_fail: Callable[[str], NoReturn]) -> Iterator[str]:
    yield from second_engine(SECOND_ENGINE, docker_host, skip_or_fail)


async def start_secured(database_url: str, tmp_path: Path) -> ServerHandle:
    return await start_server(database_url, tmp_path, "cara-server", {
        "CARA_INSECURE_ALLOW_ANONYMOUS": "false",
        "CARA_API_TOKEN": ADMIN,  # the test's admin
        "CARA_HEARTBEAT_TIMEOUT": "30s",
    })


@pytest.fixture
async def secured_cluster(
    database_url: str, tmp_path: Path, docker_host: str, second_docker_host: str
) -> AsyncIterator[tuple[ServerHandle, CaravanseraiClient, list[AgentHandle]]]:
    server = await start_secured(database_url, tmp_path)
    pools = [Agents(server.url, host, tmp_path) for host in (docker_host, second_docker_host)]
    engines = [aiodocker.Docker(url=host) for host in (docker_host, second_docker_host)]
    try:
        async with CaravanseraiClient(server.url, token=ADMIN) as admin:
            created = await admin.tokens.create(_token_spec("workers", "join"))
            handles = await asyncio.gather(
                *(pool.start(CARA_JOIN_TOKEN=created.token) for pool in pools)
            )
            await asyncio.gather(
                *(wait_node_state(admin, h.node, NodeState.READY, within=30) for h in handles)
            )
            yield server, admin, list(handles)
    finally:
        for pool in pools:
            for handle in pool.started:
                handle.stop()
        for engine in engines:
            for pool in pools:
                for handle in pool.started:
                    await remove_node_objects(engine, handle.node)
            await engine.close()
        server.stop()


def _token_spec(name: str, role: str) -> Any:
    from caravanserai.api.tokens import TokenCreate, TokenRole

    return TokenCreate(name=name, role=TokenRole(role))


def credential_of(tmp_path: Path, node: str) -> str:
    data = json.loads((tmp_path / "agent-data" / "nodes" / f"{node}.json").read_text())
    assert data["node"] == node
    return str(data["credential"])


async def call(server: ServerHandle, token: str, method: str, path: str,
               body: Any = None, params: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as session, session.request(
        method, server.url + path, json=body, params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=20),
    ) as resp:
        if resp.status < 400:
            return resp.status
        problem = await resp.json()
        assert problem["status"] == resp.status
        return resp.status


def caractrl(server: ServerHandle, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARA_")}
    env |= {"CARA_SERVER": server.url, "CARA_TOKEN": token, "CARA_CONFIG": os.devnull}
    return subprocess.run([str(BIN / "caractrl"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


async def test_agents_join_and_a_node_is_confined_to_itself(
    secured_cluster: tuple[ServerHandle, CaravanseraiClient, list[AgentHandle]],
    tmp_path: Path,
) -> None:
    server, admin, (a, b) = secured_cluster
    # A project on each node (pinned by cordoning the other one while it is scheduled).
    names: dict[str, str] = {}
    for here, there in ((a, b), (b, a)):
        node = await admin.nodes.get(there.node)
        node.spec.unschedulable = True
        await admin.nodes.update(node)
        name = unique("sec")
        await admin.projects.create(manifest(name, [{"name": "web", "image": WEB}]))
        project = await wait_phase(admin, name, "Running", within=60)
        assert project.status.node_ref == here.node
        names[here.node] = name
        node = await admin.nodes.get(there.node)
        node.spec.unschedulable = False
        await admin.nodes.update(node)

    a_cred = credential_of(tmp_path, a.node)
    theirs, mine = names[b.node], names[a.node]
    b_project = (await admin.projects.get(theirs)).to_wire()
    b_node = (await admin.nodes.get(b.node)).to_wire()
    refused = [
        ("GET", f"/api/v1/projects/{theirs}", None, None),
        ("GET", "/api/v1/projects", None, None),
        ("GET", "/api/v1/projects", None, {"fieldSelector": f"status.nodeRef={b.node}"}),
        ("GET", "/api/v1/projects", None,
         {"fieldSelector": f"status.nodeRef={b.node}", "watch": "true"}),
        ("GET", "/api/v1/projects", None, {"watch": "true"}),
        ("PUT", f"/api/v1/projects/{theirs}/status", b_project, None),
        ("PATCH", f"/api/v1/projects/{theirs}/status", {"phase": "Failed"}, None),
        ("DELETE", f"/api/v1/projects/{theirs}", None, None),
        ("GET", f"/api/v1/projects/{theirs}/logs", None, None),
        ("GET", f"/api/v1/nodes/{b.node}", None, None),
        ("PUT", f"/api/v1/nodes/{b.node}", b_node, None),
        ("PUT", f"/api/v1/nodes/{b.node}/status", b_node, None),
        ("POST", f"/api/v1/nodes/{b.node}/heartbeat", {"state": "Draining"}, None),
        ("DELETE", f"/api/v1/nodes/{b.node}", None, {"force": "true"}),
        ("POST", f"/api/v1/nodes/{b.node}/join", None, None),
        ("GET", "/api/v1/tokens", None, None),
    ]
    for method, path, body, params in refused:
        assert await call(server, a_cred, method, path, body, params) == 403, (method, path)
    # Its own: allowed (what the agent itself does all the time).
    ok = {"fieldSelector": f"status.nodeRef={a.node}"}
    assert await call(server, a_cred, "GET", "/api/v1/projects", params=ok) == 200
    assert await call(server, a_cred, "GET", f"/api/v1/projects/{mine}") == 200
    # Nothing of B's changed.
    after = await admin.projects.get(theirs)
    assert str(after.status.phase) == "Running" and after.status.node_ref == b.node
    assert (await admin.nodes.get(b.node)).status.state is NodeState.READY

    # Users: logs for view; port-forward for edit, not for view.
    view = (await admin.tokens.create(_token_spec("viewer", "view"))).token
    edit = (await admin.tokens.create(_token_spec("editor", "edit"))).token
    r = caractrl(server, view, "logs", f"{theirs}/web")
    assert r.returncode == 0, r.stderr
    for token, allowed in ((edit, True), (view, False)):
        url = f"{server.url}/api/v1/projects/{theirs}/portforward?service=web&port=80"
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"}
        ) as session:
            if allowed:
                async with session.ws_connect(url) as ws:
                    await ws.send_bytes(b"GET / HTTP/1.0\r\n\r\n")
                    first = await ws.receive(timeout=20)
                    assert first.type == aiohttp.WSMsgType.BINARY
                    assert first.data.startswith(b"HTTP/1.")
            else:
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await session.ws_connect(url)
                assert err.value.status == 403
