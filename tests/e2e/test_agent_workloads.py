"""e2e: what projects do on a node — service DNS, shared volumes, published ports, failures
(port conflict, missing image, exited container) and in-place spec updates."""

from __future__ import annotations

import aiodocker
import aiohttp
import pytest
from agent_e2e_support import (
    BUSYBOX,
    WEB,
    WEB_TEXT,
    AgentHandle,
    apply,
    condition,
    containers_of,
    free_port,
    leftovers,
    manifest,
    unique,
    wait_gone,
    wait_phase,
    wait_until,
)

from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker

FOREVER = "trap 'exit 0' TERM; sleep 2147483647 & wait"


async def logs_of(api: CaravanseraiClient, project: str, service: str) -> str:
    """The service's output through the server's relay (non-follow)."""
    session = api._get_session()
    async with session.get(
        api.url(f"/api/v1/projects/{project}/logs"),
        params={"service": service},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


async def test_services_reach_each_other_by_name(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    """The seed's WordPress shape: the client service fetches from ``api`` by its name."""
    name = unique("dns")
    await apply(api, agent.node, manifest(name, [
        {"name": "api", "image": WEB},
        {"name": "web", "image": BUSYBOX, "command": [
            "sh", "-c",
            "until wget -qO- http://api/; do sleep 0.2; done; echo; echo fetched; " + FOREVER,
        ]},
    ]))
    await wait_phase(api, name, "Running")

    async def fetched() -> str | None:
        text = await logs_of(api, name, "web")
        return text if "fetched" in text else None

    text = await wait_until(fetched, within=20, what="web fetching http://api/")
    assert WEB_TEXT in text
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_volume_shared_between_services(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("vol")
    mount = [{"name": "shared", "mountPath": "/shared"}]
    await apply(api, agent.node, manifest(
        name,
        [
            {"name": "writer", "image": BUSYBOX, "volumeMounts": mount,
             "command": ["sh", "-c", f"echo written-by-writer > /shared/note; {FOREVER}"]},
            {"name": "reader", "image": BUSYBOX, "volumeMounts": mount,
             "command": ["sh", "-c",
                         f"until cat /shared/note; do sleep 0.2; done; {FOREVER}"]},
        ],
        volumes=[{"name": "shared", "type": "Ephemeral"}],
    ))
    await wait_phase(api, name, "Running")
    volume = await docker.volumes.get(f"cara-{name}-shared")
    labels = (await volume.show())["Labels"]
    assert labels["cara.project"] == name and labels["cara.node"] == agent.node

    async def read() -> bool:
        return "written-by-writer" in await logs_of(api, name, "reader")

    await wait_until(read, within=20, what="reader seeing the writer's file")
    await api.projects.delete(name)
    await wait_gone(api, docker, name)  # the Ephemeral volume goes with the project


async def test_published_port_and_port_conflict(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    port = free_port()
    first, second = unique("port-a"), unique("port-b")
    web = [{"name": "web", "image": WEB,
            "ports": [{"containerPort": 80, "hostPort": port}]}]
    await apply(api, agent.node, manifest(first, web))
    await wait_phase(api, first, "Running")

    async def served() -> str | None:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{port}/", timeout=aiohttp.ClientTimeout(total=3)
        ) as resp:
            return await resp.text()

    assert WEB_TEXT in await wait_until(served, within=10, what="the published port")

    await apply(api, agent.node, manifest(second, web))
    failed = await wait_phase(api, second, "Failed")
    cond = condition(failed, "ContainersRunning")
    assert (str(cond.status), cond.reason) == ("False", "PortConflict")
    assert str(port) in (cond.message or "")
    assert str((await api.projects.get(first)).status.phase) == "Running"

    # A Failed project is deleted with its debris (the created container, the network).
    await api.projects.delete(second)
    await api.projects.delete(first)
    await wait_gone(api, docker, second)
    await wait_gone(api, docker, first)


async def test_missing_image(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("typo")
    image = f"cara-test/{name}:typo"  # exists nowhere; the pull fails fast (no registry)
    await apply(api, agent.node, manifest(name, [{"name": "app", "image": image}]))
    failed = await wait_phase(api, name, "Failed")
    cond = condition(failed, "ContainersRunning")
    assert (str(cond.status), cond.reason) == ("False", "ImagePullFailed")
    # The seed's shape: failed to pull image "myapp:typo": <Docker's error>
    assert cond.message.startswith(f'failed to pull image "{image}": ')
    assert len(cond.message) > len(f'failed to pull image "{image}": ')
    assert failed.status.services[0].state == "missing"
    assert await containers_of(docker, name) == []
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_exited_container_is_reported(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("crash")
    await apply(api, agent.node, manifest(name, [
        {"name": "ok", "image": BUSYBOX},
        {"name": "job", "image": BUSYBOX, "command": ["sh", "-c", "sleep 1; exit 3"]},
    ]))
    await wait_phase(api, name, "Running", "Failed")
    failed = await wait_phase(api, name, "Failed")
    cond = condition(failed, "ContainersRunning")
    assert (str(cond.status), cond.reason) == ("False", "ContainerExited")
    assert "job (exit code 3)" in cond.message
    by_name = {s.name: s for s in failed.status.services}
    assert (by_name["job"].state, by_name["job"].exit_code) == ("exited", 3)
    assert by_name["ok"].state == "running"
    # Not restarted behind the user's back: still one exited container.
    [job] = [c for c in await containers_of(docker, name) if c["Labels"]["cara.service"] == "job"]
    assert job["State"] == "exited"
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_spec_update_recreates_only_the_changed_service(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("update")
    services = [
        {"name": "db", "image": BUSYBOX},
        {"name": "web", "image": WEB, "env": [{"name": "VERSION", "value": "1"}]},
    ]
    await apply(api, agent.node, manifest(name, services))
    running = await wait_phase(api, name, "Running")
    before = {c["Labels"]["cara.service"]: c["Id"] for c in await containers_of(docker, name)}

    updated = running.model_copy(deep=True)
    updated.spec.services[1].env[0].value = "2"
    stored = await api.projects.update(updated)
    assert stored.metadata.generation == (running.metadata.generation or 0) + 1

    async def rolled_out() -> object:
        p = await api.projects.get(name)
        done = (
            p.status.observed_generation == stored.metadata.generation
            and str(p.status.phase) == "Running"
        )
        return p if done else None

    await wait_until(rolled_out, within=20, what="the new generation Running")
    after = {c["Labels"]["cara.service"]: c["Id"] for c in await containers_of(docker, name)}
    assert set(after) == {"db", "web"}  # no duplicates, nothing missing
    assert after["db"] == before["db"]  # unchanged: same container
    assert after["web"] != before["web"]  # changed: recreated
    web = await docker.containers.get(after["web"])
    assert "VERSION=2" in web["Config"]["Env"]
    await api.projects.delete(name)
    await wait_gone(api, docker, name)
    assert await leftovers(docker, name) == []
