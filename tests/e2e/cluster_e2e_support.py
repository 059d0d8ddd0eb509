"""Helpers of the multi-node and multi-server e2e tests (``test_multinode.py``,
``test_multiserver.py``), on top of ``agent_e2e_support``.

- :func:`second_engine`: a second private Docker engine (``hack/docker-up.sh NAME``) with
  the test images (``hack/build-images.sh``), for a second simulated machine. Stopped again
  (``hack/docker-down.sh NAME``) by the last test session using it, if a test session
  started it. When it cannot be had the test skips locally and FAILS in CI (``CI=true``),
  like the first engine.
- :class:`ServerHandle` / :func:`start_server`: a ``cara-server`` subprocess with extra
  environment (short controller timings, leader-lease timings), several of them on one
  database if wanted.
- :func:`reports_leader`: whether a replica's ``/metrics`` says it leads
  (``caravanserai_leader_is_leader``); :func:`leader_pid`: which process holds the
  controller-manager Lease object (holder identity ``host-PID-random``).
- node helpers: wait for a node state, set a node's state through the status PUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import psycopg
from agent_e2e_support import (
    BIN,
    REPO,
    Process,
    _base_env,
    _probe_docker,
    _wait_http,
    free_port,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from caravanserai.api import Conflict, Node, NodeState
from caravanserai.client import CaravanseraiClient

LEASE_NAME = "controller-manager"
RUN_ROOT = Path("/var/run/cara-docker")  # hack/docker-up.sh's sockets

# -- a second Docker engine -----------------------------------------------------------------


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def second_engine(
    name: str, first_host: str, skip_or_fail: Callable[[str], NoReturn]
) -> Iterator[str]:
    """Generator for a session fixture: yields the ``DOCKER_HOST`` of engine ``name``.

    Starts it with ``hack/docker-up.sh`` unless it already answers, and builds the local
    test images on it (a no-op when they are up to date). Several pytest sessions may use
    it at once: each holds a shared lock on ``RUN_ROOT/NAME.e2e-users`` while it does, and
    the last one out stops the engine (``hack/docker-down.sh``) if a test session started
    it (marker ``RUN_ROOT/NAME.e2e-started``). An engine started by anyone else is left
    running.
    """
    host = f"unix://{RUN_ROOT}/{name}.sock"
    if host == first_host:
        skip_or_fail(f"the second Docker engine {host} is the first one (DOCKER_HOST)")
    try:
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        users = (RUN_ROOT / f"{name}.e2e-users").open("a")
    except OSError as exc:
        skip_or_fail(f"cannot use {RUN_ROOT} for a second Docker engine: {exc}")
    marker = RUN_ROOT / f"{name}.e2e-started"
    # Blocks while a last user is stopping the engine; then we start it again.
    fcntl.flock(users, fcntl.LOCK_SH)
    try:
        if not asyncio.run(_engine_answers(host)):
            marker.touch()  # before the start: a half-started engine is ours to stop too
            up = subprocess.run(
                [str(REPO / "hack" / "docker-up.sh"), name],
                capture_output=True, text=True, timeout=300, check=False,
            )
            if up.returncode != 0:
                skip_or_fail(
                    f"cannot start a second Docker engine (hack/docker-up.sh {name} exited "
                    f"{up.returncode}): {_tail(up.stderr)}"
                )
            exports = [ln for ln in up.stdout.splitlines() if ln.startswith("export DOCKER_HOST=")]
            if exports:
                host = exports[-1].split("=", 1)[1].strip()
        build = subprocess.run(
            [str(REPO / "hack" / "build-images.sh")],
            env=os.environ | {"DOCKER_HOST": host},
            capture_output=True, text=True, timeout=600, check=False,
        )
        if build.returncode != 0:
            skip_or_fail(
                f"cannot build the test images on {host} (hack/build-images.sh exited "
                f"{build.returncode}): {_tail(build.stderr)}"
            )
        if why := asyncio.run(_probe_docker(host)):
            skip_or_fail(f"second Docker engine {host} unusable: {why}")
        yield host
    finally:
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another session still uses the engine: the last one stops it
        else:
            if marker.exists():
                down = subprocess.run(
                    [str(REPO / "hack" / "docker-down.sh"), name],
                    capture_output=True, text=True, timeout=180, check=False,
                )
                if down.returncode == 0:
                    marker.unlink(missing_ok=True)
                else:
                    print(f"hack/docker-down.sh {name} failed:\n{_tail(down.stderr)}",
                          file=sys.stderr)
        finally:
            users.close()


async def _engine_answers(host: str) -> bool:
    import aiodocker

    try:
        async with aiodocker.Docker(url=host) as docker:
            async with asyncio.timeout(5):
                await docker.version()
    except Exception:
        return False
    return True


# -- cara-server replicas -------------------------------------------------------------------


@dataclass
class ServerHandle:
    """One ``cara-server`` subprocess."""

    name: str
    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.proc.pid if self.process.proc is not None else None

    def kill(self) -> None:
        """SIGKILL: the lease is not released, nothing is cleaned up."""
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines of this process whose ``event`` is ``event``."""
        out = []
        try:
            text = self.process.log_path.read_text(errors="replace")
        except OSError:
            return []
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == event:
                    out.append(record)
        return out


async def start_server(
    database_url: str, tmp_path: Path, name: str, env: dict[str, str] | None = None
) -> ServerHandle:
    """Start ``cara-server`` on a free port and wait until it answers ``/api/healthz``.

    Its log is ``tmp_path/{name}.log`` (printed by the e2e conftest when a test fails).
    """
    port = free_port()
    full_env = _base_env() | {
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        # Open on loopback unless ``env`` says otherwise (test_auth_e2e.py does).
        "CARA_INSECURE_ALLOW_ANONYMOUS": "true",
    } | (env or {})
    proc = Process(name, [str(BIN / "cara-server")], full_env, tmp_path / f"{name}.log",
                   tmp_path)
    proc.start()
    handle = ServerHandle(name, port, proc)
    try:
        await _wait_http(handle.url + "/api/healthz", proc)
    except BaseException:
        proc.stop()
        raise
    return handle


async def reports_leader(server: ServerHandle) -> bool:
    """What the replica's ``/metrics`` says: ``caravanserai_leader_is_leader{lease=...}``."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(server.url + "/metrics") as resp,
    ):
        resp.raise_for_status()
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "caravanserai_leader_is_leader"
                    and sample.labels.get("lease") == LEASE_NAME):
                return sample.value == 1
    return False


async def leader_pid(database_url: str) -> int | None:
    """PID of the process holding the controller-manager lease (None: nobody, or expired).

    The elector's identity is ``{hostname}-{pid}-{random}`` (``informer.leader``).
    """
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        # The Lease is an API object in cara_objects; its renewTime is the holder's clock,
        # which on one test machine is the database's too.
        cur = await conn.execute(
            "SELECT object->'spec'->>'holderIdentity' FROM cara_objects"
            " WHERE kind = 'Lease' AND name = %s"
            " AND (object->'spec'->>'renewTime')::timestamptz"
            " + (object->'spec'->>'leaseDurationSeconds')::float * interval '1 second'"
            " >= now()",
            (LEASE_NAME,),
        )
        row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    parts = str(row[0]).rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


# -- nodes ----------------------------------------------------------------------------------


async def wait_node_state(
    api: CaravanseraiClient, node: str, state: NodeState, *, within: float = 20.0
) -> Node:
    async def probe() -> Node | None:
        n = await api.nodes.get(node)
        return n if n.status.state is state else None

    return await wait_until(probe, within=within, what=f"node {node} {state}")


async def set_node_state(api: CaravanseraiClient, node: str, state: NodeState) -> Node:
    """``PUT /api/v1/nodes/{node}/status`` with ``state``, as an admin does (retried on a
    409: the agent's heartbeats move the node's resourceVersion every second)."""
    for _ in range(20):
        current = await api.nodes.get(node)
        current.status.state = state
        try:
            return await api.nodes.update_status(current)
        except Conflict:
            await asyncio.sleep(0.05)
    raise AssertionError(f"could not set node {node} {state}: 20 conflicts in a row")
