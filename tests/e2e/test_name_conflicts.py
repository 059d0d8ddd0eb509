"""e2e (issue 12, item 4): the agent never stops, removes or reuses a Docker object whose
owner labels are not its project's; the project is Failed with reason NameConflict instead.

The server refuses two projects whose Docker names meet (tests/integration); what is left
for the agent is an object the server does not know about: made by hand, or by a project
of another cluster on the same engine. Real server, agent and Docker.
"""

from __future__ import annotations

import contextlib

import aiodocker
import pytest
from agent_e2e_support import (
    BUSYBOX,
    AgentHandle,
    apply,
    condition,
    manifest,
    unique,
    wait_gone,
    wait_phase,
)

from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker


async def test_another_projects_volume_is_never_reused_or_removed(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("vol")
    volume = f"cara-{name}-data"
    foreign = {"cara.project": f"{name}-elsewhere", "cara.node": agent.node, "cara.uid": "x"}
    await docker.volumes.create({"Name": volume, "Labels": foreign})
    try:
        await apply(api, agent.node, manifest(
            name,
            [{"name": "db", "image": BUSYBOX, "command": ["sleep", "3600"],
              "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            volumes=[{"name": "data"}],
        ))
        failed = await wait_phase(api, name, "Failed")
        cond = condition(failed, "ContainersRunning")
        assert (str(cond.status), cond.reason) == ("False", "NameConflict")
        assert f'"{name}-elsewhere"' in (cond.message or "")
        # The other project's volume is there, untouched (same labels: not re-created).
        info = await docker.volumes.get(volume)
        assert (await info.show())["Labels"] == foreign
        await api.projects.delete(name)
        await wait_gone(api, docker, name)
        assert (await (await docker.volumes.get(volume)).show())["Labels"] == foreign
    finally:
        with contextlib.suppress(aiodocker.DockerError):
            await (await docker.volumes.get(volume)).delete()


async def test_a_hand_made_container_of_the_same_name_is_never_stopped(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("ctr")
    stray = await docker.containers.create_or_replace(
        f"{name}-web", {"Image": BUSYBOX, "Cmd": ["sleep", "3600"]}
    )
    await stray.start()
    try:
        await apply(api, agent.node, manifest(
            name, [{"name": "web", "image": BUSYBOX, "command": ["sleep", "3600"]}]
        ))
        failed = await wait_phase(api, name, "Failed")
        cond = condition(failed, "ContainersRunning")
        assert (str(cond.status), cond.reason) == ("False", "NameConflict")
        assert "not managed by caravanserai" in (cond.message or "")
        assert (await stray.show())["State"]["Running"] is True
        await api.projects.delete(name)
        await wait_gone(api, docker, name)
        assert (await stray.show())["State"]["Running"] is True
    finally:
        await stray.delete(force=True)


async def test_containers_are_safe_by_default_and_the_agents_ports_are_refused(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    """Issue 12, item 5: no-new-privileges on every container; a hostPort that is the
    agent's own API or proxy port, or below 1024, fails the project with PortConflict."""
    name = unique("safe")
    await apply(api, agent.node, manifest(
        name, [{"name": "app", "image": BUSYBOX, "command": ["sleep", "3600"]}]))
    await wait_phase(api, name, "Running")
    container = await docker.containers.get(f"{name}-app")
    assert "no-new-privileges:true" in (await container.show())["HostConfig"]["SecurityOpt"]
    await api.projects.delete(name)
    await wait_gone(api, docker, name)

    for port, why in ((agent.api_port, "agent's own"), (agent.proxy_port, "agent's own"),
                      (80, "minimum host port 1024")):
        bad = unique("port")
        await apply(api, agent.node, manifest(bad, [
            {"name": "app", "image": BUSYBOX, "command": ["sleep", "3600"],
             "ports": [{"containerPort": 80, "hostPort": port}]}]))
        failed = await wait_phase(api, bad, "Failed")
        cond = condition(failed, "ContainersRunning")
        assert (str(cond.status), cond.reason) == ("False", "PortConflict")
        assert why in (cond.message or "")
        await api.projects.delete(bad)
        await wait_gone(api, docker, bad)
