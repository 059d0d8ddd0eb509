"""e2e: ``cara-server --dev`` as a program — what the quickstart does not show.

- Ctrl-C stops the agent, the server and the embedded PostgreSQL, and leaves the project's
  containers running; a second run finds the data of the first and the agent adopts the
  containers (same container, not a new one).
- With ``DATABASE_URL`` set it uses that database and starts no embedded one.

Each run gets HOME/XDG directories in a fresh temp directory, free ports and a unique node
name; everything labelled with the node is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import pytest
from agent_e2e_support import (
    BIN,
    REPO,
    free_port,
    remove_node_objects,
    wait_gone,
    wait_phase,
    wait_until,
)
from ruamel.yaml import YAML

from caravanserai.client import CaravanseraiClient

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

STARTUP_TIMEOUT = 60.0


@dataclass
class Dev:
    proc: asyncio.subprocess.Process
    stdout: list[str]
    log: Path
    reader: asyncio.Task[None]

    @property
    def banner(self) -> str:
        return "\n".join(self.stdout)

    def agent_pid(self) -> int:
        m = re.search(r"cara-agent pid (\d+)", self.banner)
        assert m, self.banner
        return int(m.group(1))

    async def stop(self) -> int:
        """Ctrl-C; returns the exit status."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        return self.proc.returncode if self.proc.returncode is not None else -1


@dataclass
class DevEnv:
    tmp: Path
    env: dict[str, str]
    node: str
    server_url: str
    runs: int = 0

    def client(self) -> CaravanseraiClient:
        """A client as caractrl is after ``--dev``: the server and the admin token that the
        dev cluster wrote into the user's caractrl config."""
        path = Path(self.env["XDG_CONFIG_HOME"]) / "caravanserai" / "config.yaml"
        settings = YAML(typ="safe", pure=True).load(path.read_text("utf-8"))
        assert settings["server"] == self.server_url
        return CaravanseraiClient(self.server_url, token=settings["token"])

    async def start(self, **extra: str) -> Dev:
        self.runs += 1
        log = self.tmp / f"dev-{self.runs}.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                str(BIN / "cara-server"), "--dev", env=self.env | extra, cwd=self.tmp,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err,
                start_new_session=True,
            )
        lines: list[str] = []

        async def read() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                lines.append(raw.decode(errors="replace").rstrip("\n"))

        dev = Dev(proc, lines, log, asyncio.create_task(read()))

        async def up() -> bool:
            if proc.returncode is not None:
                pytest.fail(f"cara-server --dev exited {proc.returncode}:\n"
                            + log.read_text(errors="replace")[-4000:])
            return any(line.startswith("Ctrl-C stops") for line in lines)

        await wait_until(up, within=STARTUP_TIMEOUT, what="cara-server --dev up")
        return dev


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _traversable_tmp() -> Path:
    # Not tmp_path: as root the embedded PostgreSQL's unprivileged user must traverse every
    # parent of its data directory, and /tmp/pytest-of-root is 0700.
    tmp = Path(tempfile.mkdtemp(prefix="cara-dev-"))
    tmp.chmod(0o711)
    return tmp


@pytest.fixture
async def dev_env(docker_host: str, docker: aiodocker.Docker) -> AsyncIterator[DevEnv]:
    tmp = _traversable_tmp()
    node = f"dev-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("CARA_", "AGENT_", "XDG_"))
        and k not in ("DATABASE_URL", "HOST", "PORT", "SERVER_URL", "NODE_NAME",
                      "PROXY_LISTEN_ADDR", "HEARTBEAT_INTERVAL")
    } | {
        "HOME": str(tmp / "home"),
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DOCKER_HOST": docker_host,
        "PORT": str(port),
        "NODE_NAME": node,
        "AGENT_LISTEN_PORT": str(free_port()),
        "PROXY_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "AGENT_STOP_TIMEOUT": "2s",
    }
    try:
        yield DevEnv(tmp, env, node, f"http://127.0.0.1:{port}")
    finally:
        await remove_node_objects(docker, node)
        shutil.rmtree(tmp, ignore_errors=True)


def hello(name: str) -> dict[str, object]:
    data: dict[str, object] = YAML(typ="safe", pure=True).load(
        (REPO / "examples" / "hello.yaml").read_text("utf-8")
    )
    data["metadata"] = {"name": name}
    return data


async def test_restart_keeps_data_and_adopts_running_containers(
    dev_env: DevEnv, docker: aiodocker.Docker
) -> None:
    devs: list[Dev] = []
    first = await dev_env.start()
    devs.append(first)
    data_dir = dev_env.tmp / "data" / "caravanserai" / "postgres"
    assert f"data in {data_dir}" in first.banner
    # The terminal gets the summary, not the programs' logs: those are in files it names.
    logs = dev_env.tmp / "data" / "caravanserai" / "logs"
    for path in (logs / "cara-server.log", logs / "cara-agent.log", data_dir / "server.log"):
        assert str(path.relative_to(dev_env.tmp)) in first.banner, first.banner
    terminal = first.log.read_text(errors="replace")
    assert '"event"' not in terminal and "listening" not in terminal, terminal
    assert '"event": "listening"' in (logs / "cara-server.log").read_text()
    assert '"app": "cara-agent"' in (logs / "cara-agent.log").read_text()
    name = f"hello-{uuid.uuid4().hex[:6]}"
    try:
        async with dev_env.client() as api:
            await api.projects.create(hello(name))
            await wait_phase(api, name, "Running")
        container = await docker.containers.get(f"{name}-web")
        container_id = container.id

        agent_pid = first.agent_pid()
        assert await first.stop() == 0
        log = first.log.read_text(errors="replace")
        assert "stopped the agent, the server and the database" in log
        assert not _alive(agent_pid), "the agent outlived cara-server --dev"
        assert not (data_dir / "postmaster.pid").exists(), "PostgreSQL still running"
        # The agent's normal semantics: stopping it leaves the containers running.
        info = await (await docker.containers.get(f"{name}-web")).show()
        assert info["State"]["Running"]

        second = await dev_env.start()
        devs.append(second)
        async with dev_env.client() as api:
            project = await wait_phase(api, name, "Running")
            assert project.status.node_ref == dev_env.node
            # Adopted, not recreated.
            assert (await docker.containers.get(f"{name}-web")).id == container_id
            await api.projects.delete(name)
            await wait_gone(api, docker, name)
        assert await second.stop() == 0
    finally:
        for dev in devs:
            await dev.stop()


async def test_database_url_is_used_instead_of_the_embedded_one(
    dev_env: DevEnv, database_url: str
) -> None:
    dev = await dev_env.start(DATABASE_URL=database_url)
    try:
        line = next(x for x in dev.stdout if x.strip().startswith("database"))
        assert "DATABASE_URL" in line and "embedded" not in line, line
        assert not (dev_env.tmp / "data" / "caravanserai" / "postgres").exists()
        async with dev_env.client() as api:
            nodes = await api.nodes.list()
            assert [n.metadata.name for n in nodes.items] == [dev_env.node]
    finally:
        assert await dev.stop() == 0
    # Someone else's database is not ours to stop.
    assert "stopped the agent and the server; containers keep running" in dev.log.read_text()
