"""e2e: the seed guide's walkthrough, the node lifecycle and the project lifecycle.

Real PostgreSQL, ``cara-server``, ``cara-agent`` and Docker (see conftest.py).
"""

from __future__ import annotations

import aiodocker
import pytest
from agent_e2e_support import (
    BUSYBOX,
    WEB,
    AgentHandle,
    Agents,
    apply,
    condition,
    containers_of,
    leftovers,
    manifest,
    unique,
    wait_gone,
    wait_phase,
    wait_until,
)

from caravanserai.api import NodeState
from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker


async def test_seed_walkthrough(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    """apply → Running (ContainersRunning) → delete → Terminated, nothing left behind."""
    name = unique("my-project")
    body = manifest(
        name,
        [{"name": "web", "image": WEB, "env": [{"name": "APP_ENV", "value": "production"}]}],
        volumes=[],
    )
    created = await apply(api, agent.node, body)
    assert str(created.status.phase) == "Pending"

    running = await wait_phase(api, name, "Running")
    assert running.status.node_ref == agent.node
    cond = condition(running, "ContainersRunning")
    assert (str(cond.status), cond.reason) == ("True", "ContainersRunning")
    assert running.status.observed_generation == running.metadata.generation
    assert [(s.name, s.state) for s in running.status.services] == [("web", "running")]

    [summary] = await containers_of(docker, name)
    assert summary["Names"] == [f"/{name}-web"]
    labels = summary["Labels"]
    assert labels["cara.project"] == name
    assert labels["cara.service"] == "web"
    assert labels["cara.node"] == agent.node
    assert "cara.config-hash" in labels
    info = await docker.containers.get(summary["Id"])
    assert "APP_ENV=production" in info["Config"]["Env"]
    assert f"cara-{name}" in info["NetworkSettings"]["Networks"]

    assert await api.projects.delete(name) is not None  # 202: the agent tears it down
    await wait_gone(api, docker, name)
    assert await leftovers(docker, name) == []


async def test_node_registers_with_facts_and_heartbeats(
    api: CaravanseraiClient, agents: Agents
) -> None:
    handle = await agents.start()

    async def ready() -> object:
        node = await api.nodes.get(handle.node)
        return node if node.status.state == NodeState.READY else None

    node = await wait_until(ready, within=10, what="node Ready")
    info = node.status.info
    assert info.hostname and info.kernel_version and info.os_image
    assert info.docker_version and info.agent_version
    assert node.status.capacity.get("cpu") and node.status.capacity.get("memory")
    assert node.status.network.ip == "127.0.0.1"
    assert node.status.network.agent_port == handle.api_port
    assert node.status.network.proxy_port == handle.proxy_port
    first = await api.nodes.last_heartbeat(handle.node)

    async def beat_again() -> bool:
        return await api.nodes.last_heartbeat(handle.node) != first

    await wait_until(beat_again, within=5, what="a second heartbeat")

    # The server forgets the node (deleted, database reset): the agent registers again.
    await api.nodes.delete(handle.node)

    async def back() -> bool:
        return (await api.nodes.get(handle.node)).status.state == NodeState.READY

    await wait_until(back, within=10, what="node registered again")


async def test_heartbeat_is_not_delayed_by_a_slow_teardown(
    api: CaravanseraiClient, agents: Agents, docker: aiodocker.Docker
) -> None:
    """A container that ignores SIGTERM keeps the reconciler busy for the stop grace
    period; heartbeats go on meanwhile (the original's single loop stalled them)."""
    handle = await agents.start(AGENT_STOP_TIMEOUT="8s")
    await wait_until(
        lambda: _is_ready(api, handle.node), within=10, what="node Ready"
    )
    name = unique("stubborn")
    await apply(api, handle.node, manifest(name, [{
        "name": "app", "image": BUSYBOX,
        "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
    }]))
    await wait_phase(api, name, "Running")
    await api.projects.delete(name)
    await wait_phase(api, name, "Terminating", "Terminated")
    seen = set()

    async def heartbeats_during_teardown() -> bool:
        seen.add(await api.nodes.last_heartbeat(handle.node))
        return len(seen) >= 4

    await wait_until(heartbeats_during_teardown, within=7, interval=0.2,
                     what="heartbeats while a container takes its stop grace period")
    project = await api.projects.get(name)
    assert str(project.status.phase) == "Terminating"  # the teardown was still going on
    await wait_gone(api, docker, name, within=20)


async def _is_ready(api: CaravanseraiClient, node: str) -> bool:
    return (await api.nodes.get(node)).status.state == NodeState.READY
