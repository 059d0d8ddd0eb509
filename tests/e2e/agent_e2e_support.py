"""End-to-end helpers and fixtures (re-exported by conftest.py): real PostgreSQL, a real
``cara-server``, real ``cara-agent``s, real Docker.

- ``docker_host``: a Docker engine with the local test images (``hack/docker-up.sh`` +
  ``hack/build-images.sh``). None reachable: skipped locally with the reason, a FAILURE in
  CI (``CI=true``).
- ``cara_server``: ``cara-server`` as a subprocess on a free port, on this test's database.
- ``agents``: starts ``cara-agent`` subprocesses (``agents.start()``), each with its own
  node name, ports and log file; they can be SIGKILLed and restarted. At teardown every
  Docker object labelled with their node names is removed, whatever the test did.
- ``api``: a ``CaravanseraiClient`` on the server.

Everything waits for conditions by polling with a deadline (``wait_until``), never by
sleeping a fixed time. Names carry a random suffix, so runs sharing one Docker engine do
not collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiodocker
import aiohttp
import pytest

from caravanserai.api import Conflict, NotFound, Project, ProjectPhase
from caravanserai.client import CaravanseraiClient

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUSYBOX = "cara-test/busybox:latest"
WEB = "cara-test/web:latest"
WEB_TEXT = "hello from cara-test/web"
DEFAULT_TIMEOUT = 30.0
DOCKER_CANDIDATES = (
    "unix:///var/run/cara-docker/cara.sock",
    "unix:///var/run/docker.sock",
)

pytestmark = pytest.mark.docker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str = "e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float = DEFAULT_TIMEOUT,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``within``."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = await probe()
        except (NotFound, aiodocker.DockerError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


# -- Docker -----------------------------------------------------------------------------------


async def _probe_docker(url: str) -> str | None:
    """None when the engine answers and has the test images, else why not."""
    try:
        async with aiodocker.Docker(url=url) as docker:
            async with asyncio.timeout(5):
                await docker.version()
                for image in (BUSYBOX, WEB):
                    try:
                        await docker.images.inspect(image)
                    except aiodocker.DockerError:
                        return f"image {image} missing (run hack/build-images.sh)"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def docker_host(skip_or_fail: Callable[[str], Any]) -> str:
    """A Docker engine with the test images; skip (locally) or fail (CI) without one."""
    candidates = [os.environ["DOCKER_HOST"]] if os.environ.get("DOCKER_HOST") else []
    candidates += [c for c in DOCKER_CANDIDATES if c not in candidates]
    reasons = []
    for url in candidates:
        if url.startswith("unix://") and not Path(url[7:]).exists():
            reasons.append(f"{url}: no socket")
            continue
        why = asyncio.run(_probe_docker(url))
        if why is None:
            return url
        reasons.append(f"{url}: {why}")
    skip_or_fail(
        "no usable Docker engine (start one: eval \"$(hack/docker-up.sh)\"; "
        "hack/build-images.sh): " + "; ".join(reasons)
    )
    raise AssertionError("unreachable")


@pytest.fixture
async def docker(docker_host: str) -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker(url=docker_host) as client:
        yield client


async def containers_of(docker: aiodocker.Docker, project: str) -> list[dict[str, Any]]:
    """Every container (any state) labelled with ``project``, as list summaries."""
    filters = json.dumps({"label": [f"cara.project={project}"]})
    return list(
        await docker._query_json("containers/json", params={"all": True, "filters": filters})
    )


async def leftovers(docker: aiodocker.Docker, project: str) -> list[str]:
    """Names of containers, networks and volumes left for ``project`` (empty when clean)."""
    label = {"label": [f"cara.project={project}"]}
    out = [f"container/{c['Names'][0].lstrip('/')}" for c in await containers_of(docker, project)]
    out += [f"network/{n['Name']}" for n in await docker.networks.list(filters=label)]
    volumes = await docker.volumes.list(filters=label)
    out += [f"volume/{v['Name']}" for v in volumes.get("Volumes") or []]
    # Objects named like the project's but unlabelled would be debris too.
    for net in await docker.networks.list(filters={"name": [f"cara-{project}"]}):
        if net["Name"] == f"cara-{project}" and f"network/{net['Name']}" not in out:
            out.append(f"network/{net['Name']}")
    return out


async def remove_node_objects(docker: aiodocker.Docker, node: str) -> None:
    """Remove whatever a test left on the engine for ``node`` (containers, networks, volumes)."""
    filters = {"label": [f"cara.node={node}"]}
    data = await docker._query_json(
        "containers/json", params={"all": True, "filters": json.dumps(filters)}
    )
    for c in data:
        with contextlib.suppress(aiodocker.DockerError):
            await docker.containers.container(c["Id"]).delete(force=True)
    for net in await docker.networks.list(filters=filters):
        with contextlib.suppress(aiodocker.DockerError):
            await (await docker.networks.get(net["Id"])).delete()
    volumes = await docker.volumes.list(filters=filters)
    for v in volumes.get("Volumes") or []:
        with contextlib.suppress(aiodocker.DockerError):
            await (await docker.volumes.get(v["Name"])).delete()


# -- cara-server ------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        log.write(f"\n=== start {self.name} {time.strftime('%X')}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not end in time. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARA_", "AGENT_"))}
    for key in ("SERVER_URL", "NODE_NAME", "HEARTBEAT_INTERVAL", "PROXY_LISTEN_ADDR",
                "DATABASE_URL", "HOST", "PORT", "DEBUG"):
        env.pop(key, None)
    return env


async def _wait_http(url: str, proc: Process, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            if not proc.running:
                pytest.fail(f"{proc.name} exited early:\n{proc.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                pytest.fail(f"{proc.name} did not answer {url}:\n{proc.log_tail()}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def cara_server(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A running ``cara-server`` on a free port; yields its URL."""
    port = free_port()
    # Open on loopback (these tests are not about authorization; test_auth_e2e.py is). The
    # agents still join and then act with their node credentials.
    env = _base_env() | {"DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": str(port),
                         "CARA_INSECURE_ALLOW_ANONYMOUS": "true"}
    proc = Process("cara-server", [str(BIN / "cara-server")], env, tmp_path / "server.log",
                   tmp_path)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_http(url + "/api/healthz", proc)
        yield url
    finally:
        proc.stop()
        if os.environ.get("CARA_E2E_SHOW_LOGS"):
            print(proc.log_tail(200), file=sys.stderr)


@pytest.fixture
async def api(cara_server: str) -> AsyncIterator[CaravanseraiClient]:
    async with CaravanseraiClient(cara_server) as client:
        yield client


# -- cara-agent -------------------------------------------------------------------------------


@dataclass
class AgentHandle:
    node: str
    api_port: int
    proxy_port: int
    process: Process

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> int | None:
        return self.process.stop()

    async def restart(self) -> None:
        self.process.stop()
        self.process.start()
        await _wait_http(self.api_url + "/healthz", self.process)

    async def start_again(self) -> None:
        """Start after a kill (same node name, ports and log file)."""
        self.process.start()
        await _wait_http(self.api_url + "/healthz", self.process)

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


@dataclass
class Agents:
    server_url: str
    docker_host: str
    tmp_path: Path
    started: list[AgentHandle] = field(default_factory=list)

    async def start(self, **env: str) -> AgentHandle:
        node = unique("node")
        api_port, proxy_port = free_port(), free_port()
        full_env = _base_env() | {
            "SERVER_URL": self.server_url,
            "NODE_NAME": node,
            "DOCKER_HOST": self.docker_host,
            "AGENT_LISTEN_HOST": "127.0.0.1",
            "AGENT_LISTEN_PORT": str(api_port),
            "PROXY_LISTEN_ADDR": f"127.0.0.1:{proxy_port}",
            "AGENT_ADVERTISE_IP": "127.0.0.1",
            "HEARTBEAT_INTERVAL": "1s",
            "AGENT_STOP_TIMEOUT": "2s",
            "AGENT_SWEEP_INTERVAL": "5s",
            "DEBUG": "true",
            "AGENT_DATA_DIR": str(self.tmp_path / "agent-data"),
        } | env
        proc = Process(f"cara-agent {node}", [str(BIN / "cara-agent")], full_env,
                       self.tmp_path / f"agent-{node}.log", self.tmp_path)
        proc.start()
        handle = AgentHandle(node, api_port, proxy_port, proc)
        self.started.append(handle)
        await _wait_http(handle.api_url + "/healthz", proc)
        return handle


@pytest.fixture
async def agents(
    cara_server: str, docker_host: str, tmp_path: Path, docker: aiodocker.Docker
) -> AsyncIterator[Agents]:
    pool = Agents(cara_server, docker_host, tmp_path)
    try:
        yield pool
    finally:
        for handle in pool.started:
            handle.stop()
            if os.environ.get("CARA_E2E_SHOW_LOGS"):
                print(handle.process.log_tail(200), file=sys.stderr)
        for handle in pool.started:
            await remove_node_objects(docker, handle.node)


@pytest.fixture
async def agent(agents: Agents, api: CaravanseraiClient) -> AgentHandle:
    """One running agent whose node is registered and Ready."""
    handle = await agents.start()
    await wait_until(
        lambda: _node_ready(api, handle.node), what=f"node {handle.node} Ready", within=15
    )
    return handle


async def _node_ready(api: CaravanseraiClient, node: str) -> bool:
    n = await api.nodes.get(node)
    return str(n.status.state) == "Ready"


# -- projects ---------------------------------------------------------------------------------


def manifest(name: str, services: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Project",
        "metadata": {"name": name},
        "spec": {"services": services, **spec},
    }


async def schedule(api: CaravanseraiClient, name: str, node: str) -> None:
    """Put a Pending project on ``node`` — what the scheduler controller does.

    With a scheduler running (one Ready node: ours) it may have done it already; the
    resourceVersion precondition makes this a no-op then.
    """
    project = await api.projects.get(name)
    if project.status.phase != ProjectPhase.PENDING:
        return
    with contextlib.suppress(Conflict):
        await api.request(
            "PATCH",
            f"/api/v1/projects/{name}/status",
            body={
                "phase": "Scheduled",
                "nodeRef": node,
                "reason": "Scheduled",
                "message": f"assigned to node {node} (e2e)",
                "resourceVersion": project.metadata.resource_version,
            },
        )


async def apply(api: CaravanseraiClient, node: str, body: dict[str, Any]) -> Project:
    """Create the project and get it scheduled on ``node``."""
    created = await api.projects.create(body)
    await schedule(api, created.metadata.name, node)
    return created


async def wait_phase(
    api: CaravanseraiClient, name: str, *phases: str, within: float = DEFAULT_TIMEOUT
) -> Project:
    async def probe() -> Project | None:
        p = await api.projects.get(name)
        return p if str(p.status.phase) in phases else None

    return await wait_until(probe, within=within, what=f"project {name} in {phases}")


async def wait_gone(
    api: CaravanseraiClient, docker: aiodocker.Docker, name: str,
    within: float = DEFAULT_TIMEOUT,
) -> None:
    """The project is Terminated or removed, and nothing of it is left in Docker."""

    async def terminated() -> bool:
        try:
            p = await api.projects.get(name)
        except NotFound:
            return True
        return str(p.status.phase) == "Terminated"

    await wait_until(terminated, within=within, what=f"project {name} terminated")

    async def clean() -> bool:
        return not await leftovers(docker, name)

    await wait_until(clean, within=within, what=f"no Docker objects left for {name}")


def condition(project: Project, type_: str) -> Any:
    return next((c for c in project.status.conditions if c.type == type_), None)
