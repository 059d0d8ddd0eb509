"""e2e: the agent is stateless — killed at any moment it adopts what exists when it comes
back, and it sweeps what belongs to projects no longer assigned to it."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiodocker
import pytest
from agent_e2e_support import (
    BUSYBOX,
    WEB,
    AgentHandle,
    Agents,
    apply,
    containers_of,
    leftovers,
    manifest,
    schedule,
    unique,
    wait_gone,
    wait_phase,
    wait_until,
)

from caravanserai.api import Conflict, NodeState
from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker


async def _first_container_event(
    docker: aiodocker.Docker, project: str, action: str, subscribed: asyncio.Event
) -> None:
    """Return as soon as Docker reports ``action`` for a container of ``project``; sets
    ``subscribed`` once the engine answered the subscription (events from then on count)."""
    filters = json.dumps({"type": ["container"], "event": [action],
                          "label": [f"cara.project={project}"]})
    async with docker._query("events", params={"filters": filters}, timeout=None) as resp:
        subscribed.set()
        while True:
            line = await resp.content.readline()
            if not line:
                raise AssertionError("docker event stream ended")
            if json.loads(line).get("Action") == action:
                return


async def test_sigkill_mid_reconcile_converges_without_duplicates(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("kill")
    services = [{"name": f"s{i}", "image": BUSYBOX} for i in range(3)]
    services.append({"name": "web", "image": WEB})
    subscribed = asyncio.Event()
    watcher = asyncio.create_task(_first_container_event(docker, name, "create", subscribed))
    # the event subscription must be in place before anything happens
    await asyncio.wait_for(subscribed.wait(), 10)
    await apply(api, agent.node, manifest(name, services))
    async with asyncio.timeout(20):
        await watcher
    agent.kill()  # SIGKILL right after the first container was created
    mid = await containers_of(docker, name)
    assert len(mid) < len(services) or any(c["State"] != "running" for c in mid), (
        "the kill came too late to interrupt the reconcile"
    )

    await agent.start_again()
    project = await wait_phase(api, name, "Running")
    found = await containers_of(docker, name)
    per_service = Counter(c["Labels"]["cara.service"] for c in found)
    assert per_service == Counter(s["name"] for s in services)  # exactly one each
    assert all(c["State"] == "running" for c in found)
    networks = await docker.networks.list(filters={"label": [f"cara.project={name}"]})
    assert len(networks) == 1
    assert project.status.observed_generation == project.metadata.generation
    assert "pulling image" not in agent.log()  # images present: never pulled
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_restart_adopts_running_containers(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("adopt")
    await apply(api, agent.node, manifest(name, [{"name": "web", "image": WEB}]))
    await wait_phase(api, name, "Running")
    before = [c["Id"] for c in await containers_of(docker, name)]
    assert agent.stop() == 0  # SIGTERM: a clean exit, containers left running
    assert [c["State"] for c in await containers_of(docker, name)] == ["running"]
    await agent.start_again()

    async def ready() -> bool:
        return (await api.nodes.get(agent.node)).status.state == NodeState.READY

    await wait_until(ready, within=10, what="node Ready again")
    await wait_until(lambda: _log_has(agent, "controller started"), within=10,
                     what="agent reconciling again")
    await wait_phase(api, name, "Running")
    assert [c["Id"] for c in await containers_of(docker, name)] == before
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def _log_has(agent: AgentHandle, text: str) -> bool:
    return agent.log().count(text) >= 2


async def test_force_delete_is_swept(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("force")
    await apply(api, agent.node, manifest(
        name,
        [{"name": "app", "image": BUSYBOX,
          "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        volumes=[{"name": "data"}],
    ))
    await wait_phase(api, name, "Running")
    assert await api.projects.delete(name, force=True) is None  # 204: the record is gone

    async def swept() -> bool:
        return not await leftovers(docker, name)

    await wait_until(swept, within=20, what="the sweep of a force-deleted project")


async def test_force_delete_while_agent_is_down_is_swept_on_start(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    keep, gone = unique("keep"), unique("gone")
    for name in (keep, gone):
        await apply(api, agent.node, manifest(name, [{"name": "app", "image": BUSYBOX}]))
    await wait_phase(api, keep, "Running")
    await wait_phase(api, gone, "Running")
    agent.kill()
    await api.projects.delete(gone, force=True)
    await agent.start_again()

    async def swept() -> bool:
        return not await leftovers(docker, gone)

    await wait_until(swept, within=20, what="the startup sweep")
    # The project still assigned here was never touched.
    [kept] = await containers_of(docker, keep)
    assert kept["State"] == "running"
    assert str((await api.projects.get(keep)).status.phase) == "Running"
    await api.projects.delete(keep)
    await wait_gone(api, docker, keep)


async def test_project_moved_to_another_node_is_swept(
    api: CaravanseraiClient, agents: Agents, docker: aiodocker.Docker
) -> None:
    """After a partition the rescheduler moves the project away (Running → Pending → another
    node): the old node's agent removes its copy, the new node runs it."""
    old = await agents.start()
    new = await agents.start()
    for handle in (old, new):
        await wait_until(lambda h=handle: _ready(api, h.node), within=10, what="Ready")
    await set_unschedulable(api, new.node, True)  # a scheduler, if running, picks `old`
    name = unique("moved")
    await apply(api, old.node, manifest(name, [{"name": "app", "image": BUSYBOX}]))
    project = await wait_phase(api, name, "Running")
    assert project.status.node_ref == old.node

    await set_unschedulable(api, old.node, True)
    await set_unschedulable(api, new.node, False)
    # What the rescheduler does: back to Pending, off the old node; then (the scheduler,
    # or this test standing in for it) onto the new one. Both agents share one Docker
    # engine here, so the new one waits for the old one's sweep before it can take the
    # container names; on real nodes the two copies never meet.
    await api.request("PATCH", f"/api/v1/projects/{name}/status",
                      body={"phase": "Pending", "reason": "NodeNotReady"})
    await schedule(api, name, new.node)

    async def moved() -> bool:
        p = await api.projects.get(name)
        nodes = {c["Labels"]["cara.node"] for c in await containers_of(docker, name)}
        return (
            p.status.node_ref == new.node and str(p.status.phase) == "Running"
            and nodes == {new.node}
        )

    await wait_until(moved, within=30, what="the project running on the new node only")
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def set_unschedulable(api: CaravanseraiClient, node: str, value: bool) -> None:
    for _ in range(5):
        current = await api.nodes.get(node)
        current.spec.unschedulable = value
        try:
            await api.nodes.update(current)
            return
        except Conflict:
            continue
    raise AssertionError(f"could not update node {node}")


async def _ready(api: CaravanseraiClient, node: str) -> bool:
    return (await api.nodes.get(node)).status.state == NodeState.READY
