"""e2e: one cara-server, two nodes — each a cara-agent with its OWN private Docker engine.

The first node uses the suite's engine (``docker_host``); the second one a second private
``dockerd`` (``hack/docker-up.sh node2``, images built on it; stopped at the end of the
session when a test session started it and no other one still uses it; the NAME can be
changed with ``CARA_E2E_SECOND_ENGINE``). The server runs with short timings: heartbeats
every 1 s, a node is NotReady after 3 s of silence, Running projects on it move after a
3 s grace period.

Proves: projects spread over both nodes (and their containers are on the right engine);
a SIGKILLed agent's node goes NotReady and its Running projects come up on the other node
after the grace period; the agent, back, sweeps the moved projects' old containers from
its engine; a Draining node gets no new projects (heartbeats do not clear Draining).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import aiodocker
import pytest
from agent_e2e_support import (
    BUSYBOX,
    AgentHandle,
    Agents,
    containers_of,
    leftovers,
    manifest,
    remove_node_objects,
    unique,
    wait_phase,
    wait_until,
)
from cluster_e2e_support import (
    ServerHandle,
    second_engine,
    set_node_state,
    start_server,
    wait_node_state,
)

from caravanserai.api import NodeState, Project
from caravanserai.api.node import CONDITION_READY
from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker

HEARTBEAT_TIMEOUT = 3.0
RUNNING_GRACE = 3.0
SERVER_ENV = {
    "CARA_HEARTBEAT_TIMEOUT": f"{HEARTBEAT_TIMEOUT:g}s",
    "CARA_RUNNING_GRACE": f"{RUNNING_GRACE:g}s",
    "CARA_TERMINATING_TIMEOUT": "10s",
}
# The second engine's NAME for hack/docker-up.sh (its socket, data root and bridge).
SECOND_ENGINE = os.environ.get("CARA_E2E_SECOND_ENGINE", "node2")


@pytest.fixture(scope="session")
def second_docker_host(docker_host: str, skip_or_fail: Callable[[str], NoReturn]) -> Iterator[str]:
    """A second private Docker engine with the test images, for the second node."""
    yield from second_engine(SECOND_ENGINE, docker_host, skip_or_fail)


@dataclass
class Machine:
    """A simulated machine: a Docker engine and the agent running against it."""

    docker: aiodocker.Docker
    agent: AgentHandle

    @property
    def node(self) -> str:
        return self.agent.node


@dataclass
class Cluster:
    api: CaravanseraiClient
    server: ServerHandle
    machines: list[Machine]

    def on(self, node: str | None) -> Machine:
        return next(m for m in self.machines if m.node == node)

    def other(self, machine: Machine) -> Machine:
        return next(m for m in self.machines if m is not machine)


@pytest.fixture
async def cluster(
    database_url: str, tmp_path: Path, docker_host: str, second_docker_host: str
) -> AsyncIterator[Cluster]:
    """The server, and one Ready agent on each engine."""
    server = await start_server(database_url, tmp_path, "cara-server", SERVER_ENV)
    pools = [Agents(server.url, host, tmp_path) for host in (docker_host, second_docker_host)]
    engines = [aiodocker.Docker(url=host) for host in (docker_host, second_docker_host)]
    try:
        async with CaravanseraiClient(server.url) as api:
            handles = await asyncio.gather(*(pool.start() for pool in pools))
            await asyncio.gather(
                *(wait_node_state(api, h.node, NodeState.READY, within=15) for h in handles)
            )
            machines = [Machine(d, h) for d, h in zip(engines, handles, strict=True)]
            yield Cluster(api, server, machines)
    finally:
        for pool in pools:
            for handle in pool.started:
                handle.stop()
        # Projects move between nodes: clean every node's objects on both engines.
        nodes = [h.node for pool in pools for h in pool.started]
        for engine in engines:
            for node in nodes:
                await remove_node_objects(engine, node)
            await engine.close()
        server.stop()


def busybox_project(prefix: str) -> tuple[str, dict[str, Any]]:
    name = unique(prefix)
    return name, manifest(name, [{"name": "app", "image": BUSYBOX}])


async def running_containers(machine: Machine, project: str) -> list[dict[str, Any]]:
    return [c for c in await containers_of(machine.docker, project) if c["State"] == "running"]


async def assert_runs_only_on(cluster: Cluster, project: Project) -> None:
    """The project's container runs on its node's engine, labelled for that node, and
    nothing of it is on the other engine."""
    name = project.metadata.name
    home = cluster.on(project.status.node_ref)
    found = await wait_until(
        lambda: running_containers(home, name), within=10, what=f"{name}'s container on "
        f"{home.node}'s engine",
    )
    assert [c["Labels"]["cara.node"] for c in found] == [home.node]
    assert await leftovers(cluster.other(home).docker, name) == []


async def test_projects_spread_over_both_nodes(cluster: Cluster) -> None:
    api = cluster.api
    names = []
    for _ in range(4):
        name, body = busybox_project("spread")
        await api.projects.create(body)
        names.append(name)

    projects = await asyncio.gather(*(wait_phase(api, n, "Running") for n in names))

    per_node = Counter(p.status.node_ref for p in projects)
    assert per_node == {m.node: 2 for m in cluster.machines}, per_node
    for project in projects:
        await assert_runs_only_on(cluster, project)


async def test_dead_node_projects_move_and_are_swept_when_it_returns(cluster: Cluster) -> None:
    api = cluster.api
    names = []
    for _ in range(4):
        name, body = busybox_project("move")
        await api.projects.create(body)
        names.append(name)
    before = {p.metadata.name: p for p in
              await asyncio.gather(*(wait_phase(api, n, "Running") for n in names))}
    victim = cluster.on(before[names[0]].status.node_ref)
    survivor = cluster.other(victim)
    moved = sorted(n for n, p in before.items() if p.status.node_ref == victim.node)
    stayed = sorted(n for n, p in before.items() if p.status.node_ref == survivor.node)
    assert moved and stayed, before
    for name in moved:
        assert await running_containers(victim, name)

    victim.agent.kill()
    killed_at = time.monotonic()
    dead = await wait_node_state(api, victim.node, NodeState.NOT_READY,
                                 within=HEARTBEAT_TIMEOUT + 10)
    not_ready_since = next(c for c in dead.status.conditions if c.type == CONDITION_READY)
    assert not_ready_since.status == "False"
    assert not_ready_since.last_transition_time is not None

    def running_on_survivor(name: str) -> Callable[[], Awaitable[Project | None]]:
        async def probe() -> Project | None:
            p = await api.projects.get(name)
            ok = str(p.status.phase) == "Running" and p.status.node_ref == survivor.node
            return p if ok else None

        return probe

    after = await asyncio.gather(*(
        wait_until(running_on_survivor(n), within=RUNNING_GRACE + 20,
                   what=f"{n} Running on {survivor.node}")
        for n in moved
    ))
    moved_in = time.monotonic() - killed_at
    for project in after:
        # Reset to Pending by the rescheduler, and only after the grace period.
        resets = [h for h in project.status.history
                  if str(h.phase) == "Pending" and h.reason == "NodeNotReady"]
        assert len(resets) == 1, project.status.history
        waited = (resets[0].time - not_ready_since.last_transition_time).total_seconds()
        assert waited >= RUNNING_GRACE - 0.05, (project.metadata.name, waited)
        assert await running_containers(survivor, project.metadata.name)
        # The dead agent could not clean up: its old containers are still on its engine.
        assert await containers_of(victim.docker, project.metadata.name)
    for name in stayed:
        p = await api.projects.get(name)
        assert (str(p.status.phase), p.status.node_ref) == ("Running", survivor.node)
        assert [h for h in p.status.history if h.reason == "NodeNotReady"] == []

    await victim.agent.start_again()
    await wait_node_state(api, victim.node, NodeState.READY, within=15)
    for name in moved:
        async def swept(name: str = name) -> bool:
            return not await leftovers(victim.docker, name)

        await wait_until(swept, within=20, what=f"old objects of {name} swept from "
                         f"{victim.node}'s engine")
    swept_in = time.monotonic() - killed_at
    for name in moved:
        p = await api.projects.get(name)
        assert (str(p.status.phase), p.status.node_ref) == ("Running", survivor.node)
        assert await running_containers(survivor, name)
    print(f"moved after {moved_in:.1f}s, swept after {swept_in:.1f}s (from the kill)")


async def test_draining_node_gets_no_new_projects(cluster: Cluster) -> None:
    api = cluster.api
    drained, other = cluster.machines
    put = await set_node_state(api, drained.node, NodeState.DRAINING)
    assert put.status.state is NodeState.DRAINING
    assert put.status.last_heartbeat is not None
    seen: set[object] = {await api.nodes.last_heartbeat(drained.node)}

    async def two_more_heartbeats() -> bool:
        n = await api.nodes.get(drained.node)
        assert n.status.state is NodeState.DRAINING, "a heartbeat cleared Draining"
        seen.add(await api.nodes.last_heartbeat(drained.node))
        return len(seen) >= 3

    await wait_until(two_more_heartbeats, within=10, what=f"heartbeats from {drained.node}")
    node = await api.nodes.get(drained.node)
    ready = next(c for c in node.status.conditions if c.type == CONDITION_READY)
    assert ready.status == "True"  # the agent is healthy: Draining is the admin's choice

    names = []
    for _ in range(4):
        name, body = busybox_project("drain")
        await api.projects.create(body)
        names.append(name)
    projects = await asyncio.gather(*(wait_phase(api, n, "Running") for n in names))
    assert {p.status.node_ref for p in projects} == {other.node}
    for project in projects:
        await assert_runs_only_on(cluster, project)
    assert (await api.nodes.get(drained.node)).status.state is NodeState.DRAINING

    # Draining is cleared only by a status PUT; then the emptier node gets the next one.
    # (Waiting for the agent's next heartbeat gives the scheduler's cache the same head
    # start on the node's change as the nodes had in the tests above.)
    put = await set_node_state(api, drained.node, NodeState.READY)
    beat_at_put = await api.nodes.last_heartbeat(drained.node)

    async def heartbeat_after_put() -> bool:
        n = await api.nodes.get(drained.node)
        assert n.status.state is NodeState.READY
        return await api.nodes.last_heartbeat(drained.node) != beat_at_put

    await wait_until(heartbeat_after_put, within=10, what=f"a heartbeat from {drained.node}")
    name, body = busybox_project("undrain")
    await api.projects.create(body)
    project = await wait_phase(api, name, "Running")
    assert project.status.node_ref == drained.node
    await assert_runs_only_on(cluster, project)
