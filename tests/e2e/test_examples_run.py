"""e2e: the manifests in examples/ run for real, offline (images from
hack/build-example-images.sh), on a real server, agent and Docker engine.

- blog.yaml: ``app`` reaches ``api`` by name and writes what it said into the shared volume
  that ``web`` serves; checked through the agent's ingress proxy (both hosts) and through
  ``caractrl port-forward`` / ``caractrl logs`` (server relay).
- hello.yaml: runs and serves its page.
- preview.yaml: with ``expireAt`` a few seconds ahead, the gc controller deletes it.
- node.yaml: a node registered by hand is not Ready and gets no projects.

Names get a random suffix (the engine is shared with other tests); everything labelled
with the test's node is removed at teardown (the ``agents`` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiodocker
import aiohttp
import pytest
from agent_e2e_support import (
    BIN,
    REPO,
    AgentHandle,
    apply,
    unique,
    wait_gone,
    wait_phase,
    wait_until,
)
from ruamel.yaml import YAML

from caravanserai.api import NotFound
from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker

EXAMPLES = REPO / "examples"
BUILD = REPO / "hack" / "build-example-images.sh"
FETCHED = "http://api/ says: hello from the api service"


def load_example(name: str, new_name: str) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe", pure=True).load(
        (EXAMPLES / name).read_text(encoding="utf-8")
    )
    data["metadata"]["name"] = new_name
    return data


@pytest.fixture(scope="session")
def example_images(docker_host: str, skip_or_fail: Callable[[str], Any]) -> None:
    """The cara-example/* images (kept when up to date: well under a second)."""
    try:
        done = subprocess.run(
            ["bash", str(BUILD)], env={**os.environ, "DOCKER_HOST": docker_host},
            capture_output=True, text=True, timeout=300,
        )
    except subprocess.TimeoutExpired:
        skip_or_fail("hack/build-example-images.sh did not finish within 300s")
        return
    if done.returncode != 0:
        skip_or_fail(f"hack/build-example-images.sh failed: {done.stderr.strip()[-500:]}")


async def fetch(url: str, host: str | None = None) -> tuple[int, str]:
    headers = {"Host": host} if host else {}
    async with aiohttp.ClientSession() as session, session.get(
        url, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
    ) as resp:
        return resp.status, await resp.text()


async def serves(url: str, text: str, host: str | None = None) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        status, body = await fetch(url, host)
        return status == 200 and text in body
    return False


@contextlib.asynccontextmanager
async def port_forward(server: str, target: str, remote: int) -> AsyncIterator[str]:
    """``caractrl port-forward TARGET :REMOTE``; yields the local URL it listens on."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "caractrl"), "--server", server, "port-forward", target, f":{remote}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("CARA_")},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(15):
            line = (await proc.stdout.readline()).decode()
        match = re.search(rf"Forwarding from (127\.0\.0\.1:\d+) -> {remote}\b", line)
        assert match, f"unexpected port-forward output: {line!r}"
        yield f"http://{match.group(1)}/"
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def caractrl(server: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "caractrl"), "--server", server, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("CARA_")},
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_blog_example_web_serves_what_app_fetched_from_api_by_name(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker,
    cara_server: str, example_images: None,
) -> None:
    name = unique("blog")
    await apply(api, agent.node, load_example("blog.yaml", name))
    project = await wait_phase(api, name, "Running", within=30)
    assert {s.name for s in project.status.services} == {"api", "app", "web"}

    # Through the ingress proxy: the dotted host verbatim, the short one completed with
    # {environment}.{baseDomain}. The page only exists once app has fetched from api.
    await wait_until(lambda: serves(agent.proxy_url, FETCHED, "blog.example.com"),
                     within=20, what="web serving what app fetched from api")
    assert await serves(agent.proxy_url, FETCHED, "news.dev.cara.local")

    # Through the server's relays, as a user does: port-forward and logs.
    async with port_forward(cara_server, f"{name}/web", 80) as url:
        assert await serves(url, FETCHED)
    logs = await caractrl(cara_server, "logs", f"{name}/app")
    assert f"fetcher: {FETCHED}" in logs

    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_hello_example_serves_its_page(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker,
    cara_server: str, example_images: None,
) -> None:
    name = unique("hello")
    await apply(api, agent.node, load_example("hello.yaml", name))
    await wait_phase(api, name, "Running")
    async with port_forward(cara_server, name, 80) as url:
        await wait_until(lambda: serves(url, "Welcome to Caravanserai"), within=10,
                         what="the welcome page through port-forward")
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_preview_example_is_deleted_at_expire_at(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker,
    example_images: None,
) -> None:
    name = unique("preview")
    body = load_example("preview.yaml", name)
    # The file's time must be in the future when applied; here: a few seconds ahead, long
    # enough to see it run first.
    expire_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=15)
    body["spec"]["expireAt"] = expire_at.isoformat().replace("+00:00", "Z")
    await apply(api, agent.node, body)
    running = await wait_phase(api, name, "Running", within=15)
    # Ordering on the server's records, not the test's stopwatch: it ran before expireAt...
    ran_at = next(h.time for h in running.status.history if h.phase.value == "Running")
    assert ran_at < expire_at, "Running was recorded only after expireAt"
    last: list[Any] = []

    async def record_deletion() -> None:
        async for event in api.projects.watch(running.metadata.resource_version):
            if event.object is not None and event.object.metadata.name == name:
                last[:] = [event]

    recorder = asyncio.create_task(record_deletion())
    try:
        await wait_gone(api, docker, name, within=40)
        with pytest.raises(NotFound):
            await api.projects.get(name)
    finally:
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)
    # ...and its deletion began at expireAt, not before (gc's graceful delete).
    assert last and last[0].type.value == "DELETED", last
    deleted_at = last[0].object.metadata.deletion_timestamp
    assert deleted_at is not None and deleted_at >= expire_at


async def test_node_example_registers_a_node_that_gets_no_projects(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker,
    example_images: None,
) -> None:
    name = unique("edge")
    created = await api.nodes.create(load_example("node.yaml", name))
    assert created.metadata.labels == {"zone": "hsinchu"}
    assert created.spec.hostname == "edge-01.local"
    assert str(created.status.state) != "Ready"  # no agent heartbeats for it

    # A project goes to the node with an agent, never to the hand-registered one.
    project = unique("hello")
    await api.projects.create(load_example("hello.yaml", project))
    scheduled = await wait_phase(api, project, "Scheduled", "Running", within=15)
    assert scheduled.status.node_ref == agent.node
    await api.projects.delete(project)
    await wait_gone(api, docker, project)
    await api.nodes.delete(name, force=True)

