"""e2e: token authentication end to end through an agent, and a cara-server restart under a
live agent.

- Server with ``CARA_API_TOKEN``, agent with ``CARA_TOKEN``: the agent joins with it,
  registers, runs a project, and the server relays its logs (the relay authenticates to the
  agent with the node's own secret); without a token both the server's API and the agent's
  log endpoint refuse (401).
- ``cara-server`` stopped and started again (same address) while an agent runs: the
  containers keep running meanwhile, the agent re-watches, and changes made after the
  restart (a new project, a deletion) still reach it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import aiohttp
import pytest
from agent_e2e_support import (
    BIN,
    BUSYBOX,
    AgentHandle,
    Agents,
    Process,
    _base_env,
    _node_ready,
    _wait_http,
    apply,
    containers_of,
    free_port,
    manifest,
    remove_node_objects,
    unique,
    wait_gone,
    wait_phase,
    wait_until,
)

from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker

TOKEN = "e2e-s3cret-token"
TALKER = "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done"


@dataclass
class Server:
    url: str
    process: Process


@pytest.fixture
def server_env() -> dict[str, str]:
    # Open on loopback unless a test sets a token (the token test below).
    return {"CARA_INSECURE_ALLOW_ANONYMOUS": "true"}


@contextlib.contextmanager
def _stopping(proc: Process) -> Iterator[None]:
    try:
        yield
    finally:
        proc.stop()


@pytest.fixture
async def server(
    database_url: str, tmp_path: Path, server_env: dict[str, str]
) -> AsyncIterator[Server]:
    port = free_port()
    env = _base_env() | {"DATABASE_URL": database_url, "HOST": "127.0.0.1",
                         "PORT": str(port)} | server_env
    proc = Process("cara-server", [str(BIN / "cara-server")], env, tmp_path / "server.log",
                   tmp_path)
    proc.start()
    with _stopping(proc):
        url = f"http://127.0.0.1:{port}"
        await _wait_http(url + "/api/healthz", proc)
        yield Server(url, proc)


@pytest.fixture
async def node_agents(
    server: Server, docker_host: str, tmp_path: Path, docker: aiodocker.Docker
) -> AsyncIterator[Agents]:
    pool = Agents(server.url, docker_host, tmp_path)
    try:
        yield pool
    finally:
        for handle in pool.started:
            handle.stop()
        for handle in pool.started:
            await remove_node_objects(docker, handle.node)


async def _ready_agent(
    pool: Agents, api: CaravanseraiClient, **env: str
) -> AgentHandle:
    handle = await pool.start(**env)
    await wait_until(lambda: _node_ready(api, handle.node), within=15,
                     what=f"node {handle.node} Ready")
    return handle


@pytest.mark.parametrize("server_env", [{"CARA_API_TOKEN": TOKEN}], ids=["token"])
async def test_token_auth_end_to_end_through_an_agent(
    server: Server, node_agents: Agents, docker: aiodocker.Docker
) -> None:
    async with (
        CaravanseraiClient(server.url, token=TOKEN) as api,
        aiohttp.ClientSession() as http,
    ):
        agent = await _ready_agent(node_agents, api, CARA_TOKEN=TOKEN)
        name = unique("auth")
        await apply(api, agent.node, manifest(name, [
            {"name": "talker", "image": BUSYBOX, "command": ["sh", "-c", TALKER]},
        ]))
        await wait_phase(api, name, "Running")

        # Logs relayed by the server from the agent, which demands the token too.
        logs = f"{server.url}/api/v1/projects/{name}/logs"
        auth = {"Authorization": f"Bearer {TOKEN}"}

        async def ticks() -> str | None:
            async with http.get(logs, params={"service": "talker"}, headers=auth) as resp:
                text = await resp.text()
                return text if resp.status == 200 and "tick-3" in text else None

        await wait_until(ticks, within=15, what="relayed log lines")

        # Without the token: the server's API and the agent's own endpoint refuse.
        for url in (f"{server.url}/api/v1/projects", logs + "?service=talker"):
            async with http.get(url) as resp:
                assert resp.status == 401, url
        direct = f"{agent.api_url}/api/v1/logs/{name}/talker"
        async with http.get(direct) as resp:
            assert resp.status == 401, direct  # the agent serves the relay only
        async with http.get(f"{server.url}/api/v1/projects",
                            headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401

        await api.projects.delete(name)
        await wait_gone(api, docker, name)


async def test_server_restart_under_a_live_agent(
    server: Server, node_agents: Agents, docker: aiodocker.Docker
) -> None:
    async with CaravanseraiClient(server.url) as api:
        agent = await _ready_agent(node_agents, api)
        before = unique("before")
        await apply(api, agent.node, manifest(before, [{"name": "s", "image": BUSYBOX}]))
        await wait_phase(api, before, "Running")
        running = {c["Id"] for c in await containers_of(docker, before)}

        assert server.process.stop() == 0, server.process.log_tail()
        # The server is gone: the agent leaves the workload alone.
        assert agent.process.running
        still = await containers_of(docker, before)
        assert {c["Id"] for c in still} == running
        assert all(c["State"] == "running" for c in still)
        server.process.start()
        await _wait_http(server.url + "/api/healthz", server.process)

        # After the restart, changes still reach the agent (it re-watched).
        after = unique("after")
        await apply(api, agent.node, manifest(after, [{"name": "s", "image": BUSYBOX}]))
        await wait_phase(api, after, "Running")
        # The old project's containers were adopted as they were, not recreated.
        assert {c["Id"] for c in await containers_of(docker, before)} == running
        await api.projects.delete(before)
        await wait_gone(api, docker, before)
        assert agent.process.running
        await api.projects.delete(after)
        await wait_gone(api, docker, after)
