"""e2e: restart policies with CrashLoopBackOff, resource limits, healthchecks gating the
ingress, and dependsOn start order, on the private Docker engine."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiodocker
import aiohttp
import pytest
from agent_e2e_support import (
    BIN,
    BUSYBOX,
    WEB,
    WEB_TEXT,
    AgentHandle,
    Agents,
    apply,
    condition,
    containers_of,
    free_port,
    manifest,
    unique,
    wait_gone,
    wait_phase,
    wait_until,
)

from caravanserai.api import Project
from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker

FOREVER = "trap 'exit 0' TERM; sleep 2147483647 & wait"
# Healthy once someone creates /tmp/ok (the test does, with docker exec): no timing race.
HEALTH = {"test": ["CMD-SHELL", "test -f /tmp/ok"], "interval": "300ms", "retries": 1000}


async def describe(cara_server: str, kind: str, name: str) -> str:
    """``caractrl describe KIND NAME`` as a user runs it."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "caractrl"), "--server", cara_server, "describe", kind, name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def events_section(text: str) -> list[list[str]]:
    """The rows of describe's ``Events:`` table, as (Type, Reason, ...) word lists."""
    lines = text.split("\nEvents:", 1)[1].splitlines()
    return [line.split() for line in lines[3:] if line.strip()]


async def wait_for_events(
    cara_server: str, kind: str, name: str, *wanted: tuple[str, str]
) -> list[list[str]]:
    """Describe until its Events section shows each (type, reason) of ``wanted``."""

    async def shown() -> list[list[str]] | None:
        rows = events_section(await describe(cara_server, kind, name))
        seen = {(row[0], row[1]) for row in rows}
        return rows if set(wanted) <= seen else None

    return await wait_until(shown, within=30, what=f"events {wanted} in describe {name}")


async def _ready_agent(agents: Agents, api: CaravanseraiClient, **env: str) -> AgentHandle:
    handle = await agents.start(**env)

    async def ready() -> bool:
        return str((await api.nodes.get(handle.node)).status.state) == "Ready"

    await wait_until(ready, within=15, what=f"node {handle.node} Ready")
    return handle


async def test_crashing_service_restarts_with_growing_backoff(
    api: CaravanseraiClient, agents: Agents, docker: aiodocker.Docker, cara_server: str
) -> None:
    # A short base delay (1s → 2s → 4s ...) so the growth is seen without minutes of waiting.
    agent = await _ready_agent(agents, api, AGENT_RESTART_BACKOFF="1s")
    name = unique("crash")
    await apply(api, agent.node, manifest(name, [
        {"name": "app", "image": BUSYBOX, "command": ["sh", "-c", "echo boom; exit 3"],
         "restart": "always"},
    ]))
    delays: list[str] = []

    async def backed_off_thrice() -> Project | None:
        p = await api.projects.get(name)
        assert str(p.status.phase) in ("Scheduled", "Running"), p.status
        cond = condition(p, "ContainersRunning")
        if cond is not None and cond.reason == "CrashLoopBackOff":
            assert "exit code 3" in (cond.message or "")
            word = (cond.message or "").split()[1]  # "back-off 2s restarting ..."
            if not delays or delays[-1] != word:
                delays.append(word)
        return p if len(delays) >= 3 else None

    project = await wait_until(backed_off_thrice, within=40, what="three backoffs")
    assert delays[:3] == ["1s", "2s", "4s"]
    assert str(project.status.phase) == "Running"
    assert (project.status.services[0].restart_count or 0) >= 2
    # One container restarted in place (same id), not recreated.
    assert len(await containers_of(docker, name)) == 1
    # What happened, as describe tells it: created, started, then backoffs, aggregated
    # into one line whose count grows ("(xN over T)"). (``apply`` binds the project itself:
    # the scheduler's events are the placement test's.)
    await wait_for_events(
        cara_server, "project", name,
        ("Normal", "Created"), ("Normal", "Started"), ("Warning", "BackOff"),
    )

    async def aggregated() -> list[str] | None:
        rows = events_section(await describe(cara_server, "project", name))
        backoffs = [row for row in rows if row[1] == "BackOff"]
        assert len(backoffs) == 1, rows  # one line, however often it happened
        return backoffs[0] if backoffs[0][3].startswith("(x") else None

    backoff = await wait_until(aggregated, within=30, what="BackOff counted (xN over T)")
    assert "over" in backoff and "cara-agent" in backoff
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_limits_are_visible_in_docker_inspect(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("limits")
    await apply(api, agent.node, manifest(name, [
        {"name": "app", "image": BUSYBOX, "command": ["sh", "-c", FOREVER],
         "resources": {"limits": {"cpus": 0.5, "memory": "64m", "pids": 100},
                       "requests": {"cpus": "250m", "memory": "32Mi"}}},
    ]))
    await wait_phase(api, name, "Running")
    container = await docker.containers.get(f"{name}-app")
    host = (await container.show())["HostConfig"]
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 100
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def _exec(docker: aiodocker.Docker, container: str, *cmd: str) -> None:
    c = await docker.containers.get(container)
    run = await c.exec(list(cmd))
    await run.start(detach=True)


async def test_health_gates_start_order_and_traffic(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker, cara_server: str
) -> None:
    name = unique("health")
    await apply(api, agent.node, manifest(
        name,
        [
            {"name": "web", "image": WEB, "healthcheck": HEALTH,
             "dependsOn": [{"service": "db", "condition": "service_healthy"}]},
            {"name": "db", "image": BUSYBOX, "command": ["sh", "-c", FOREVER],
             "healthcheck": HEALTH},
        ],
        ingress=[{"name": "www", "host": name, "target": {"service": "web", "port": 80}}],
    ))
    host = f"{name}.dev.cara.local"

    async def waiting() -> Project | None:
        p = await api.projects.get(name)
        cond = condition(p, "ContainersRunning")
        return p if cond is not None and cond.reason == "WaitingForDependencies" else None

    p = await wait_until(waiting, within=30, what="web waiting for db")
    assert "web: waiting for db to be healthy" in (condition(p, "ContainersRunning").message)
    names = {c["Names"][0].lstrip("/") for c in await containers_of(docker, name)}
    assert names == {f"{name}-db"}  # web not even created while db is not healthy

    await _exec(docker, f"{name}-db", "touch", "/tmp/ok")

    async def web_running() -> Project | None:
        p = await api.projects.get(name)
        return p if str(p.status.phase) == "Running" else None

    p = await wait_until(web_running, within=30, what="web started after db healthy")
    web = await (await docker.containers.get(f"{name}-web")).show()
    db = await (await docker.containers.get(f"{name}-db")).show()
    db_healthy_log = [entry for entry in db["State"]["Health"]["Log"] if entry["ExitCode"] == 0]
    assert db_healthy_log, db["State"]["Health"]
    # web started after db's first passing check.
    assert web["State"]["StartedAt"] > min(e["End"] for e in db_healthy_log)
    ready = condition(p, "Ready")
    assert ready is not None and str(ready.status) == "False"

    async def fetch() -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(
            agent.proxy_url, headers={"Host": host}, timeout=aiohttp.ClientTimeout(total=5)
        ) as resp:
            return resp.status, await resp.text()

    status, body = await fetch()
    assert status == 503, body  # web runs but its check has not passed: no traffic
    assert "not ready" in body

    await _exec(docker, f"{name}-web", "touch", "/tmp/ok")

    async def served() -> str | None:
        status, body = await fetch()
        return body if status == 200 else None

    assert WEB_TEXT in await wait_until(served, within=30, what="web routed once healthy")

    async def ready_true() -> Any:
        p = await api.projects.get(name)
        cond = condition(p, "Ready")
        return p if cond is not None and str(cond.status) == "True" else None

    p = await wait_until(ready_true, within=30, what="project Ready")
    assert {s.name: s.health for s in p.status.services} == {"web": "healthy", "db": "healthy"}
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_a_failing_healthcheck_is_an_unhealthy_event(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker, cara_server: str
) -> None:
    name = unique("unhealthy")
    await apply(api, agent.node, manifest(name, [
        {"name": "app", "image": BUSYBOX, "command": ["sh", "-c", FOREVER],
         "healthcheck": {"test": ["CMD-SHELL", "exit 1"], "interval": "300ms", "retries": 1}},
    ]))
    rows = await wait_for_events(cara_server, "project", name, ("Warning", "Unhealthy"))
    unhealthy = next(row for row in rows if row[1] == "Unhealthy")
    assert " ".join(unhealthy).endswith(f"Health check of container {name}-app failed")
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_requests_steer_placement_and_wait_for_room(
    api: CaravanseraiClient, agents: Agents, docker: aiodocker.Docker, cara_server: str
) -> None:
    """Three projects of 1Gi go to the node with room; a fourth is Unschedulable until a
    node with room joins (the scheduler runs in the server)."""
    total = (await docker.system.info())["MemTotal"]
    gib = 1 << 30

    def reserve_all_but(keep: int) -> str:
        return f"memory={(total - keep) // 1024}Ki"

    small = await _ready_agent(agents, api, AGENT_SYSTEM_RESERVED=reserve_all_but(gib // 2))
    big = await _ready_agent(agents, api, AGENT_SYSTEM_RESERVED=reserve_all_but(3 * gib))
    svc = [{"name": "app", "image": BUSYBOX, "command": ["sh", "-c", FOREVER],
            "resources": {"requests": {"memory": "1Gi"}}}]
    names = [unique(f"req{i}") for i in range(4)]
    for name in names[:3]:
        await api.projects.create(manifest(name, svc))
    for name in names[:3]:
        p = await wait_phase(api, name, "Scheduled", "Running")
        assert p.status.node_ref == big.node
    await api.projects.create(manifest(names[3], svc))

    async def unschedulable() -> Project | None:
        p = await api.projects.get(names[3])
        cond = condition(p, "Scheduled")
        return p if cond is not None and cond.reason == "Unschedulable" else None

    p = await wait_until(unschedulable, within=20, what="the fourth Unschedulable")
    assert str(p.status.phase) == "Pending"
    assert condition(p, "Scheduled").message == "0/2 nodes fit: 2 insufficient memory"
    assert small.node != big.node
    rows = await wait_for_events(
        cara_server, "project", names[3], ("Warning", "FailedScheduling")
    )
    assert any(
        " ".join(row).endswith("scheduler 0/2 nodes fit: 2 insufficient memory")
        for row in rows if row[1] == "FailedScheduling"
    ), rows

    joined = await _ready_agent(agents, api, AGENT_SYSTEM_RESERVED=reserve_all_but(2 * gib))
    p = await wait_phase(api, names[3], "Scheduled", "Running")
    assert p.status.node_ref == joined.node
    assert condition(p, "Scheduled") is None  # the why is gone once it is placed
    rows = await wait_for_events(cara_server, "project", names[3], ("Normal", "Scheduled"))
    scheduled = next(row for row in rows if row[1] == "Scheduled")
    assert " ".join(scheduled).endswith(f"Successfully assigned {names[3]} to {joined.node}")
    for name in names:
        await api.projects.delete(name)
    for name in names:
        await wait_gone(api, docker, name)


COMPOSE = """\
name: ignored-by-p
services:
  db:
    image: cara-test/busybox:latest
    command: sh -c "touch /tmp/ok; trap 'exit 0' TERM; sleep 2147483647 & wait"
    restart: always
    environment:
      - MYSQL_DATABASE=wordpress
      - MYSQL_USER=${DB_USER:-wp}
    volumes:
      - db_data:/var/lib/mysql
    healthcheck:
      test: test -f /tmp/ok
      interval: 300ms
      retries: 100
  wordpress:
    image: cara-test/web:latest
    depends_on:
      db:
        condition: service_healthy
    restart: always
    ports:
      - "${WP_PORT:-8080}:80"
    mem_limit: 64m
    container_name: wordpress
volumes:
  db_data: {}
"""


async def test_compose_file_converts_applies_and_runs(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker,
    cara_server: str, tmp_path: Any,
) -> None:
    name = unique("compose")
    port = free_port()
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    env = {**os.environ, "WP_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "caractrl"), "--server", cara_server, "apply", "-f",
        str(tmp_path / "compose.yaml"), "-p", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert f'project "{name}" created' in out.decode()
    assert 'service "wordpress": container_name: ignored' in err.decode()

    async def ready() -> Project | None:
        p = await api.projects.get(name)
        cond = condition(p, "Ready")
        return p if str(p.status.phase) == "Running" and cond is not None and str(
            cond.status) == "True" else None

    p = await wait_until(ready, within=60, what="the compose project Running and Ready")
    assert [s.restart for s in p.spec.services] == ["always", "always"]
    db = await (await docker.containers.get(f"{name}-db")).show()
    assert "MYSQL_USER=wp" in db["Config"]["Env"]
    assert any(m["Name"] == f"cara-{name}-db-data" for m in db["Mounts"])
    wp = await (await docker.containers.get(f"{name}-wordpress")).show()
    assert wp["HostConfig"]["Memory"] == 64 << 20
    assert wp["State"]["StartedAt"] > db["State"]["StartedAt"]

    async def served() -> str | None:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{port}/", timeout=aiohttp.ClientTimeout(total=3)
        ) as resp:
            return await resp.text() if resp.status == 200 else None

    assert WEB_TEXT in await wait_until(served, within=20, what="the published port")
    await api.projects.delete(name)
    await wait_gone(api, docker, name)
