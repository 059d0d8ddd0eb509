"""caractrl end to end: the real entry point against a real cara-server and PostgreSQL.

The server runs as a subprocess (``cara-server`` on a free port, on this test's database),
so it can be killed and restarted under a running ``caractrl get -w``. The CLI runs as a
subprocess (``caractrl``, exactly what users run) for the seed walkthrough, watch, errors,
port-forward; and through click's CliRunner for breadth (every command and format).

There is no agent here: the tests write status through the API as the agent would (PATCH
Scheduled with a nodeRef, then Running), and a small fake agent HTTP server stands behind
the server's logs / port-forward relay.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from caravanserai.api import Heartbeat, NodeInfo, NodeNetwork, NodeState
from caravanserai.client.http import CaravanseraiClient
from cli.context import State
from cli.main import cli

BIN = Path(sys.executable).parent
CARA_SERVER = str(BIN / "cara-server")
CARACTRL = str(BIN / "caractrl")
GOLDEN = Path(__file__).resolve().parents[1] / "golden"

# The guide seed's manifest, byte for byte.
PROJECT_YAML = """\
apiVersion: caravanserai/v1
kind: Project
metadata:
  name: my-project
spec:
  services:
    - name: web
      image: nginx:alpine
      env:
        - name: APP_ENV
          value: production
  volumes: []
"""

NODE_YAML = """\
apiVersion: caravanserai/v1
kind: Node
metadata:
  name: node-01
spec:
  hostname: node-01
"""

WORDPRESS_YAML = """\
apiVersion: caravanserai/v1
kind: Project
metadata:
  name: wordpress
  labels:
    app: blog
spec:
  services:
    - name: db
      image: mysql:8
      volumeMounts:
        - name: mysql-data
          mountPath: /var/lib/mysql
    - name: app
      image: wordpress:latest
  volumes:
    - name: mysql-data
      type: Ephemeral
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the server ------------------------------------------------------------------------------


@dataclass
class Server:
    database_url: str
    log_path: Path
    # Controllers the server runs (CARA_CONTROLLERS): none by default, so that these tests
    # play scheduler and agent themselves and every phase is where they put it.
    controllers: str = "none"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                CARA_SERVER,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database-url",
                self.database_url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.log_path.parent,
            # Open on loopback: these tests are about the CLI, not authorization
            # (test_auth_cli.py drives caractrl against a server that needs tokens).
            env={**os.environ, "DEBUG": "false", "CARA_CONTROLLERS": self.controllers,
                 "CARA_INSECURE_ALLOW_ANONYMOUS": "true"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cara-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/api/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError("cara-server did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get_raw(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.loads(resp.read())

    def api(self, fn: Callable[[CaravanseraiClient], Any]) -> Any:
        """Call the API (as another client / the agent would) from a sync test."""

        async def go() -> Any:
            async with CaravanseraiClient(self.url) as client:
                return await fn(client)

        return asyncio.run(go())


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    srv = Server(database_url, tmp_path / "cara-server.log")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def control_plane(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """A server with every built-in controller (scheduler, termination, ...) running."""
    srv = Server(database_url, tmp_path / "cara-server.log", controllers="*")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def cli_env(server: Server, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CARA_SERVER": server.url,
        "CARA_CONFIG": str(tmp_path / "caractrl-config.yaml"),
        "COLUMNS": "200",
    }


@pytest.fixture
def env(server: Server, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: this server, a private config file, no TTY."""
    return {
        **os.environ,
        "CARA_SERVER": server.url,
        "CARA_CONFIG": str(tmp_path / "caractrl-config.yaml"),
        "COLUMNS": "200",
    }


def caractrl(
    env: dict[str, str],
    *args: str,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CARACTRL, *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def invoke(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    """caractrl through click's CliRunner, in this process (breadth tests)."""
    state = State(environ=env, manage_logging=False)
    return CliRunner().invoke(cli, list(args), obj=state, input=stdin, prog_name="caractrl")


# -- acting as the agent ---------------------------------------------------------------------


def register_node(server: Server, name: str = "node-01", *, agent_port: int | None = None) -> None:
    async def go(c: CaravanseraiClient) -> None:
        await c.nodes.create(
            {
                "apiVersion": "caravanserai/v1",
                "kind": "Node",
                "metadata": {"name": name},
                "spec": {"hostname": name},
            }
        )
        await c.nodes.heartbeat(
            name,
            Heartbeat(
                state=NodeState.READY,
                network=NodeNetwork(ip="127.0.0.1", agent_port=agent_port or 9),
                info=NodeInfo(
                    agent_version="0.1.0",
                    os_image="Debian GNU/Linux 12 (bookworm)",
                    kernel_version="6.1.0-18-amd64",
                    docker_version="24.0.5",
                ),
            ),
        )

    server.api(go)


def set_running(server: Server, project: str, node: str = "node-01") -> None:
    """What the scheduler and the agent would write: Scheduled on the node, then Running."""

    async def go(c: CaravanseraiClient) -> None:
        base = f"/api/v1/projects/{project}/status"
        await c.request(
            "PATCH", base, body={"phase": "Scheduled", "nodeRef": node, "reason": "Scheduled"}
        )
        await c.request(
            "PATCH",
            base,
            body={
                "phase": "Running",
                "reason": "ContainersRunning",
                "message": "all containers are running",
            },
        )

    server.api(go)


def set_phase(server: Server, project: str, phase: str, reason: str | None = None) -> None:
    body: dict[str, Any] = {"phase": phase}
    if reason:
        body["reason"] = reason
    server.api(lambda c: c.request("PATCH", f"/api/v1/projects/{project}/status", body=body))


# -- output normalisation for golden files ---------------------------------------------------

_AGE = re.compile(r"(?<=   )(\d+(?:s|m|m\d+s|h|h\d+m|d|d\d+h|y|y\d+d))( *)(?=   |$)")


def normalize_ages(text: str) -> str:
    """Every AGE cell becomes the seed's ``12s``, keeping the columns where they are."""

    def repl(m: re.Match[str]) -> str:
        return "12s".ljust(len(m.group(1)) + len(m.group(2)))

    return "\n".join(_AGE.sub(repl, line) for line in text.splitlines()) + "\n"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"output differs from {path}:\n{text}"


# -- a fake agent behind the server's logs / port-forward relay ------------------------------


class FakeAgent:
    """Serves the agent's logs and forward routes from a thread (its own event loop)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop_event: asyncio.Event | None = None

    async def logs(self, request: web.Request) -> web.StreamResponse:
        service = request.match_info["service"]
        ts = request.query.get("timestamps") == "true"
        lines = [f"{service} line {i}" for i in range(1, 4)]
        tail = request.query.get("tail", "all")
        if tail != "all":
            lines = lines[-int(tail) :]
        prefix = "2026-04-07T12:00:00Z " if ts else ""
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        for line in lines:
            await resp.write(f"{prefix}{line}\n".encode())
        if request.query.get("follow") == "true":
            await asyncio.sleep(0.2)
            await resp.write(f"{prefix}{service} followed\n".encode())
            await asyncio.sleep(3600)
        await resp.write_eof()
        return resp

    async def forward(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        port = request.match_info["port"]
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                # An "echo server" on the container port: answers with the port it serves.
                await ws.send_bytes(f"{port}:".encode() + msg.data.upper())
        return ws

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/api/v1/logs/{project}/{service}", self.logs)
            app.router.add_get("/api/v1/forward/{project}/{service}/{port}", self.forward)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self.stop_event = asyncio.Event()
            self.ready.set()
            await self.stop_event.wait()
            await runner.cleanup()

        self.loop.run_until_complete(main())

    def __enter__(self) -> FakeAgent:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


# -- a streaming subprocess whose lines we read with timeouts --------------------------------


class Streaming:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [CARACTRL, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                self.lines.put(line.rstrip("\n"))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def next_line(self, timeout: float = 20) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output line within {timeout}s") from None

    def line_matching(self, pattern: str, timeout: float = 40) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; saw {seen}")

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def streams() -> Iterator[list[Streaming]]:
    started: list[Streaming] = []
    yield started
    for s in started:
        s.kill()


# ============================================================================================
# The guide seed, step by step, as a user types it.
# ============================================================================================


def test_guide_seed_walkthrough(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "project.yaml").write_text(PROJECT_YAML)

    # 2. Apply the manifest.
    r = caractrl(env, "apply", "-f", "project.yaml", cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, 'project "my-project" created\n', "")

    # Fresh from the API server: Pending, no node.
    r = caractrl(env, "get", "projects", "my-project")
    assert r.stdout.splitlines()[1].split()[:4] == ["my-project", "Pending", "<none>", "Created"]

    # The scheduler and the agent (simulated) bring it to Running on node-01.
    register_node(server, "node-01")
    set_running(server, "my-project", "node-01")

    # 3. Watch the phase change: exactly the seed's table (AGE normalised).
    r = caractrl(env, "get", "projects", "my-project")
    assert r.returncode == 0 and r.stderr == ""
    assert normalize_ages(r.stdout) == (
        "NAME         PHASE     NODE      CONDITIONS          AGE\n"
        "my-project   Running   node-01   ContainersRunning   12s\n"
    )
    check_golden("get_projects_my-project.txt", normalize_ages(r.stdout))

    r = caractrl(env, "get", "projects", "--phase=Running")
    assert r.returncode == 0
    assert normalize_ages(r.stdout) == (
        "NAME         PHASE     NODE      CONDITIONS          AGE\n"
        "my-project   Running   node-01   ContainersRunning   12s\n"
    )
    r = caractrl(env, "get", "projects", "--phase=Pending")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "No projects found.\n")

    # 4./5. --output json before the subcommand: the full object, as the server returned it.
    r = caractrl(env, "--output", "json", "get", "projects", "my-project")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc == server.get_raw("/api/v1/projects/my-project")
    assert r.stdout.startswith('{\n  "apiVersion": "caravanserai/v1",\n  "kind": "Project",\n')
    assert doc["status"]["phase"] == "Running"
    assert doc["status"]["nodeRef"] == "node-01"
    assert {"type", "status", "reason"} <= set(doc["status"]["conditions"][0])

    # "Use the node name to inspect that node".
    r = caractrl(env, "get", "nodes", "node-01")
    assert normalize_ages(r.stdout) == (
        "NAME      STATE   IP          AGE\nnode-01   Ready   127.0.0.1   12s\n"
    )
    check_golden("get_nodes_node-01.txt", normalize_ages(r.stdout))

    # 6. Clean up. Running on a node: the agent must tear it down first (202)...
    r = caractrl(env, "delete", "project", "my-project")
    assert (r.returncode, r.stdout) == (0, 'project "my-project" is being deleted\n')
    r = caractrl(env, "get", "projects", "my-project")
    assert r.stdout.splitlines()[1].split()[:3] == ["my-project", "Terminating", "node-01"]
    # ...the agent reports Terminated; deleting now removes the record at once (204).
    set_phase(server, "my-project", "Terminated", "ResourcesRemoved")
    r = caractrl(env, "delete", "project", "my-project")
    assert (r.returncode, r.stdout, r.stderr) == (0, 'project "my-project" deleted\n', "")
    r = caractrl(env, "get", "projects", "my-project")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", 'Error: project "my-project" not found\n')


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _phase(server: Server, name: str) -> str | None:
    try:
        phase: str | None = server.get_raw(f"/api/v1/projects/{name}")["status"].get("phase")
        return phase
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        return None


def test_guide_seed_walkthrough_with_the_control_plane(
    control_plane: Server, tmp_path: Path
) -> None:
    """The same steps with the real scheduler and termination controller; only the agent's
    two writes (Running, Terminated) are simulated."""
    server, env = control_plane, cli_env(control_plane, tmp_path)
    (tmp_path / "project.yaml").write_text(PROJECT_YAML)
    register_node(server, "node-01")
    r = caractrl(env, "apply", "-f", "project.yaml", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, 'project "my-project" created\n')
    wait_for(lambda: _phase(server, "my-project") == "Scheduled", "the scheduler")
    server.api(
        lambda c: c.request(
            "PATCH",
            "/api/v1/projects/my-project/status",
            body={"phase": "Running", "reason": "ContainersRunning"},
        )
    )
    r = caractrl(env, "get", "projects", "my-project")
    assert normalize_ages(r.stdout) == (
        "NAME         PHASE     NODE      CONDITIONS          AGE\n"
        "my-project   Running   node-01   ContainersRunning   12s\n"
    )
    r = caractrl(env, "get", "projects", "--phase=Running")
    assert r.stdout.splitlines()[1].split()[:3] == ["my-project", "Running", "node-01"]
    doc = json.loads(caractrl(env, "--output", "json", "get", "projects", "my-project").stdout)
    assert (doc["status"]["phase"], doc["status"]["nodeRef"]) == ("Running", "node-01")
    r = caractrl(env, "delete", "project", "my-project")
    assert r.stdout in ('project "my-project" deleted\n', 'project "my-project" is being deleted\n')
    if "being" in r.stdout:
        set_phase(server, "my-project", "Terminated", "ResourcesRemoved")
    # "the project disappears from the list once ... the termination controller removes it".
    wait_for(lambda: _phase(server, "my-project") is None, "the termination controller")
    r = caractrl(env, "get", "projects")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "No projects found.\n")


def test_delete_of_a_project_without_node_is_immediate(server: Server, env: dict[str, str]) -> None:
    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    r = caractrl(env, "delete", "project", "my-project")
    assert (r.returncode, r.stdout, r.stderr) == (0, 'project "my-project" deleted\n', "")


# ============================================================================================
# apply
# ============================================================================================


def test_apply_created_configured_unchanged_with_nodes_and_dirs(
    server: Server, env: dict[str, str], tmp_path: Path
) -> None:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "1-node.yaml").write_text(NODE_YAML)
    (d / "2-projects.yaml").write_text(PROJECT_YAML + "---\n" + WORDPRESS_YAML)
    r = caractrl(env, "apply", "-f", str(d))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        'node "node-01" created',
        'project "my-project" created',
        'project "wordpress" created',
    ]
    r = caractrl(env, "apply", "-f", str(d))
    assert r.stdout.splitlines() == [
        'node "node-01" unchanged',
        'project "my-project" unchanged',
        'project "wordpress" unchanged',
    ]
    rv_before = server.get_raw("/api/v1/projects/my-project")["metadata"]["resourceVersion"]
    changed = PROJECT_YAML.replace("value: production", "value: staging")
    r = caractrl(env, "apply", "-f", "-", "-f", str(d / "1-node.yaml"), stdin=changed)
    assert r.stdout.splitlines() == ['project "my-project" configured', 'node "node-01" unchanged']
    after = server.get_raw("/api/v1/projects/my-project")
    assert after["spec"]["services"][0]["env"] == [{"name": "APP_ENV", "value": "staging"}]
    assert after["metadata"]["resourceVersion"] != rv_before
    assert after["metadata"]["generation"] == 2
    # Applying back what `get -o yaml` printed (status and all) changes nothing.
    yaml_out = caractrl(env, "get", "projects", "-o", "yaml").stdout
    r = caractrl(env, "apply", "-f", "-", stdin=yaml_out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        'project "my-project" unchanged',
        'project "wordpress" unchanged',
    ]


def test_apply_bad_manifest_prints_every_error_and_changes_nothing(
    server: Server, env: dict[str, str], tmp_path: Path
) -> None:
    bad = (
        PROJECT_YAML.replace("my-project", "good")
        + "---\n"
        + PROJECT_YAML.replace("image: nginx:alpine", 'image: ""')
        .replace("my-project", "x")
        .replace("  volumes: []\n", "    - name: Web\n      image: nginx\n      imagee: typo\n")
    )
    (tmp_path / "bad.yaml").write_text(bad)
    r = caractrl(env, "apply", "-f", str(tmp_path / "bad.yaml"))
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0] == "Error: invalid manifests: 3 errors; nothing was applied"
    assert '  project "x": spec.services[0].image: must not be empty' in lines
    assert '  project "x": spec.services[1].imagee: unknown field' in lines
    assert any(line.startswith('  project "x": spec.services[1].name: ') for line in lines)
    assert "Traceback" not in r.stderr
    assert server.get_raw("/api/v1/projects")["items"] == []  # "good" was not created either

    r = caractrl(env, "apply", "-f", str(tmp_path / "missing.yaml"))
    assert (r.returncode, r.stderr) == (
        1,
        f"Error: {tmp_path / 'missing.yaml'}: no such file or directory\n",
    )
    r = caractrl(env, "apply", "-f", "-", stdin="kind: Project\nmetadata: [oops\n")
    assert r.returncode == 1
    # Not "line 3" of a 2-line input: the end of the file, and where the open '[' began.
    assert r.stderr.startswith("Error: <stdin>: invalid YAML at the end of the file: ")
    assert "started at line 2, column 11" in r.stderr


def test_apply_wait_until_running(server: Server, env: dict[str, str]) -> None:
    register_node(server, "node-01")

    def agent() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                server.get_raw("/api/v1/projects/my-project")
            except urllib.error.HTTPError:
                time.sleep(0.1)
                continue
            time.sleep(0.5)
            set_running(server, "my-project")
            return

    t = threading.Thread(target=agent)
    t.start()
    r = caractrl(env, "apply", "-f", "-", "--wait", "--wait-timeout", "30s", stdin=PROJECT_YAML)
    t.join()
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        'project "my-project" created',
        'project "my-project" is Running on node-01',
    ]
    # Piped: progress as plain lines on stderr (no carriage returns or cursor movement).
    assert "\r" not in r.stderr and "\x1b" not in r.stderr
    assert r.stderr.splitlines()[-1] == (
        "project/my-project: Running on node-01, 0/1 service running"  # no agent here
    )


def test_apply_wait_reports_failure(server: Server, env: dict[str, str]) -> None:
    register_node(server, "node-01")
    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0

    async def fail(c: CaravanseraiClient) -> None:
        base = "/api/v1/projects/my-project/status"
        await c.request("PATCH", base, body={"phase": "Scheduled", "nodeRef": "node-01"})
        await c.request(
            "PATCH",
            base,
            body={
                "phase": "Failed",
                "reason": "ImagePullFailed",
                "message": 'failed to pull image "myapp:typo": not found',
            },
        )

    server.api(fail)
    r = caractrl(env, "apply", "-f", "-", "--wait", stdin=PROJECT_YAML)
    assert r.returncode == 1
    assert r.stdout == 'project "my-project" unchanged\n'
    assert r.stderr.splitlines()[-1] == (
        'Error: project "my-project" failed: ImagePullFailed: '
        'failed to pull image "myapp:typo": not found'
    )


def test_apply_wait_timeout(server: Server, env: dict[str, str]) -> None:
    r = caractrl(env, "apply", "-f", "-", "--wait", "--wait-timeout", "1s", stdin=PROJECT_YAML)
    assert r.returncode == 1
    assert r.stdout == 'project "my-project" created\n'
    assert r.stderr.splitlines() == [
        "project/my-project: Pending, 0/1 service running",
        'Error: timed out after 1s waiting for project "my-project" to run',
    ]


# ============================================================================================
# get: every format, selectors, golden tables
# ============================================================================================


def _seed_cluster(server: Server, env: dict[str, str]) -> None:
    register_node(server, "node-01")
    register_node(server, "node-02")
    assert (
        invoke(env, "apply", "-f", "-", stdin=PROJECT_YAML + "---\n" + WORDPRESS_YAML).exit_code
        == 0
    )
    set_running(server, "my-project", "node-01")


def test_get_every_format(server: Server, env: dict[str, str]) -> None:
    _seed_cluster(server, env)

    r = invoke(env, "get", "projects")
    assert r.exit_code == 0
    check_golden("get_projects.txt", normalize_ages(r.stdout))
    r = invoke(env, "get", "projects", "-o", "wide")
    check_golden("get_projects_wide.txt", normalize_ages(r.stdout))
    r = invoke(env, "get", "nodes")
    check_golden("get_nodes.txt", normalize_ages(r.stdout))
    r = invoke(env, "-o", "wide", "get", "nodes")
    check_golden("get_nodes_wide.txt", normalize_ages(r.stdout))

    doc = json.loads(invoke(env, "get", "projects", "-o", "json").stdout)
    raw = server.get_raw("/api/v1/projects")
    assert doc["kind"] == "ProjectList" and doc["items"] == raw["items"]
    assert doc["metadata"]["resourceVersion"] == raw["metadata"]["resourceVersion"]
    doc = json.loads(invoke(env, "get", "nodes", "node-01", "-o", "json").stdout)
    assert doc == server.get_raw("/api/v1/nodes/node-01")
    doc = json.loads(invoke(env, "get", "projects", "my-project", "wordpress", "-o", "json").stdout)
    assert doc["kind"] == "ProjectList"
    assert [i["metadata"]["name"] for i in doc["items"]] == ["my-project", "wordpress"]

    r = invoke(env, "get", "projects", "my-project", "-o", "yaml")
    assert r.stdout.startswith("apiVersion: caravanserai/v1\nkind: Project\nmetadata:\n")
    assert "  nodeRef: node-01\n" in r.stdout
    r = invoke(env, "get", "projects", "-o", "yaml")
    assert r.stdout.startswith("apiVersion: caravanserai/v1\nkind: ProjectList\n")

    assert (
        invoke(env, "get", "projects", "-o", "name").stdout
        == "project/my-project\nproject/wordpress\n"
    )
    assert invoke(env, "get", "nodes", "-o", "name").stdout == "node/node-01\nnode/node-02\n"


def test_get_filters(server: Server, env: dict[str, str]) -> None:
    _seed_cluster(server, env)
    names = lambda *a: invoke(env, "get", "projects", "-o", "name", *a).stdout.split()  # noqa: E731
    assert names("--phase=Running") == ["project/my-project"]
    assert names("--phase", "Pending") == ["project/wordpress"]
    assert names("--phase", "Pending", "--phase", "Running") == [
        "project/my-project",
        "project/wordpress",
    ]
    assert names("-l", "app=blog") == ["project/wordpress"]
    assert names("-l", "app!=blog") == ["project/my-project"]
    assert names("--field-selector", "status.nodeRef=node-01") == ["project/my-project"]
    r = invoke(env, "get", "projects", "-l", "app in (blog")
    assert r.exit_code == 1 and r.stderr.startswith("Error: ")
    assert invoke(env, "get", "projects", "--phase=Bogus").exit_code == 2


def test_get_singular_plural_and_missing(server: Server, env: dict[str, str]) -> None:
    _seed_cluster(server, env)
    for kind in ("project", "projects", "proj"):
        assert invoke(env, "get", kind, "wordpress", "-o", "name").stdout == "project/wordpress\n"
    for kind in ("node", "nodes", "no"):
        assert invoke(env, "get", kind, "node-02", "-o", "name").stdout == "node/node-02\n"
    r = invoke(env, "get", "nodes", "node-99")
    assert (r.exit_code, r.stderr) == (1, 'Error: node "node-99" not found\n')


# ============================================================================================
# describe
# ============================================================================================


def test_describe_project_and_node(server: Server, env: dict[str, str]) -> None:
    _seed_cluster(server, env)
    r = invoke(env, "describe", "project", "my-project")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "Name:                 my-project"
    assert "Phase:                Running" in lines
    assert "Node:                 node-01" in lines
    history = lines[lines.index("Phase History:") + 1 :]
    assert history[0].split() == ["PHASE", "REASON", "MESSAGE", "AGE"]
    assert history[1].split()[:2] == ["Running", "ContainersRunning"]
    assert history[2].split()[:2] == ["Scheduled", "Scheduled"]
    assert history[3].split()[0] == "Pending"
    conditions = lines[lines.index("Conditions:") + 1 :]
    assert conditions[0].split()[:3] == ["TYPE", "STATUS", "REASON"]
    assert conditions[1].split()[:3] == ["Phase", "True", "ContainersRunning"]

    r = invoke(env, "describe", "node", "node-01")
    lines = r.stdout.splitlines()
    assert lines[0] == "Name:              node-01"
    assert any(line.split() == ["State:", "Ready"] for line in lines)
    projects = lines[lines.index("Projects:") + 1 :]
    assert projects[1].split()[:2] == ["my-project", "Running"]

    r = invoke(env, "describe", "project", "nope")
    assert (r.exit_code, r.stderr) == (1, 'Error: project "nope" not found\n')


# ============================================================================================
# delete
# ============================================================================================


def test_delete_variants(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    _seed_cluster(server, env)
    r = invoke(env, "delete", "project", "nope")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", 'Error: project "nope" not found\n')

    # A node with a project on it is refused, with the way out in CLI terms.
    r = invoke(env, "delete", "node", "node-01")
    assert r.exit_code == 1
    assert r.stderr.startswith('Error: cannot delete node "node-01": 1 project(s) still assigned')
    assert "--force" in r.stderr
    r = invoke(env, "delete", "node", "node-02", "-o", "name")
    assert (r.exit_code, r.stdout) == (0, "node/node-02\n")

    # -f: the objects the file describes.
    (tmp_path / "wp.yaml").write_text(WORDPRESS_YAML)
    r = invoke(env, "delete", "-f", str(tmp_path / "wp.yaml"))
    assert (r.exit_code, r.stdout) == (0, 'project "wordpress" deleted\n')

    # --force removes a project on a node at once.
    r = invoke(env, "delete", "project", "my-project", "--force")
    assert (r.exit_code, r.stdout) == (0, 'project "my-project" deleted\n')
    r = invoke(env, "delete", "node", "node-01")
    assert (r.exit_code, r.stdout) == (0, 'node "node-01" deleted\n')


def test_delete_wait_until_gone(server: Server, env: dict[str, str]) -> None:
    _seed_cluster(server, env)

    def agent_and_termination_controller() -> None:
        # As the agent (Terminated after teardown) and the termination controller (remove).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            obj = server.get_raw("/api/v1/projects/my-project")
            if obj["status"]["phase"] == "Terminating":
                time.sleep(0.5)
                set_phase(server, "my-project", "Terminated", "ResourcesRemoved")
                server.api(lambda c: c.projects.delete("my-project"))
                return
            time.sleep(0.1)

    t = threading.Thread(target=agent_and_termination_controller)
    t.start()
    r = caractrl(env, "delete", "project", "my-project", "--wait", "--wait-timeout", "30s")
    t.join()
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        'project "my-project" is being deleted',
        'project "my-project" deleted',
    ]
    assert r.stderr == ""


# ============================================================================================
# get --watch
# ============================================================================================


def test_get_watch_sees_other_clients_and_survives_a_server_restart(
    server: Server, env: dict[str, str], streams: list[Streaming]
) -> None:
    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    watch = Streaming(env, "get", "projects", "-w")
    streams.append(watch)
    assert watch.next_line().split() == ["NAME", "PHASE", "NODE", "CONDITIONS", "AGE"]
    assert watch.next_line().split()[:2] == ["my-project", "Pending"]

    # Another client creates a project and moves one: each change is a new row.
    assert caractrl(env, "apply", "-f", "-", stdin=WORDPRESS_YAML).returncode == 0
    assert watch.line_matching(r"^wordpress\s+Pending").split()[:3] == [
        "wordpress",
        "Pending",
        "<none>",
    ]
    register_node(server, "node-01")
    set_running(server, "my-project")
    row = watch.line_matching(r"^my-project\s+Running")
    assert row.split()[:4] == ["my-project", "Running", "node-01", "ContainersRunning"]

    # The server restarts; the watch resumes from its last revision and keeps printing.
    server.stop()
    time.sleep(1.0)
    server.start()
    server.api(
        lambda c: c.request(
            "PATCH",
            "/api/v1/projects/wordpress/status",
            body={"phase": "Scheduled", "nodeRef": "node-01", "reason": "Scheduled"},
        )
    )
    row = watch.line_matching(r"^wordpress\s+Scheduled", timeout=60)
    assert row.split()[:3] == ["wordpress", "Scheduled", "node-01"]

    # A delete arrives as a row too (the object's last state).
    assert caractrl(env, "delete", "project", "wordpress", "--force").returncode == 0
    watch.line_matching(r"^wordpress\s+Scheduled")

    code, stderr = watch.interrupt()
    assert code == 0
    assert "Traceback" not in stderr and "Error" not in stderr, stderr


def test_get_watch_one_name_with_events_and_json(
    server: Server, env: dict[str, str], streams: list[Streaming]
) -> None:
    assert (
        caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML + "---\n" + WORDPRESS_YAML).returncode
        == 0
    )
    watch = Streaming(env, "get", "projects", "my-project", "-w", "--output-watch-events")
    streams.append(watch)
    assert watch.next_line().split() == ["EVENT", "NAME", "PHASE", "NODE", "CONDITIONS", "AGE"]
    assert watch.next_line().split()[:3] == ["ADDED", "my-project", "Pending"]
    register_node(server, "node-01")
    set_running(server, "my-project")
    assert watch.line_matching(r"Running").split()[:3] == ["MODIFIED", "my-project", "Running"]
    set_phase(server, "wordpress", "Pending", "Other")  # another object: not shown
    assert caractrl(env, "delete", "project", "my-project", "--force").returncode == 0
    assert watch.line_matching(r"^DELETED").split()[:2] == ["DELETED", "my-project"]
    assert watch.lines.empty()
    assert watch.interrupt()[0] == 0

    jw = Streaming(env, "get", "projects", "-w", "-o", "json")
    streams.append(jw)
    first = jw.next_line()
    assert first == "{"
    body = [first]
    while (line := jw.next_line()) != "}":
        body.append(line)
    assert json.loads("\n".join([*body, "}"]))["metadata"]["name"] == "wordpress"
    assert jw.interrupt()[0] == 0

    r = caractrl(env, "get", "projects", "nope", "-w")
    assert (r.returncode, r.stderr) == (1, 'Error: project "nope" not found\n')


# ============================================================================================
# errors, version, config, completion
# ============================================================================================


def test_refused_connection(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = {
        **os.environ,
        "CARA_SERVER": f"http://127.0.0.1:{port}",
        "CARA_CONFIG": str(tmp_path / "c.yaml"),
    }
    for args in (
        ["get", "projects"],
        ["apply", "-f", "-"],
        ["delete", "project", "x"],
        ["describe", "node", "n"],
        ["get", "projects", "-w"],
    ):
        r = caractrl(env, *args, stdin=PROJECT_YAML)
        assert r.returncode == 1, args
        assert r.stdout == ""
        assert r.stderr == (
            f"Error: cannot connect to the Caravanserai server at http://127.0.0.1:{port} "
            "(connection refused); set --server, CARA_SERVER or 'caractrl config set-server URL'\n"
        ), args
    env.pop("CARA_SERVER")
    r = caractrl(env, "version", "--server", f"http://127.0.0.1:{port}")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == "Client Version: 0.1.0"
    assert r.stdout.splitlines()[1].startswith("Server Version: <unreachable: cannot connect")


def test_version_and_caractl_alias(server: Server, env: dict[str, str]) -> None:
    r = caractrl(env, "version")
    assert (r.returncode, r.stdout) == (0, "Client Version: 0.1.0\nServer Version: 0.1.0\n")
    alias = subprocess.run(
        [str(BIN / "caractl"), "version", "--client"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert alias.stdout == "Client Version: 0.1.0\n"


def test_config_file_is_used(server: Server, env: dict[str, str]) -> None:
    no_env = {k: v for k, v in env.items() if k != "CARA_SERVER"}
    r = caractrl(no_env, "config", "set-server", server.url)
    assert r.returncode == 0 and server.url in r.stdout
    assert (
        caractrl(no_env, "apply", "-f", "-", stdin=PROJECT_YAML).stdout
        == 'project "my-project" created\n'
    )
    r = caractrl(no_env, "config", "view")
    assert f"server: {server.url}" in r.stdout
    # The environment beats the file, a flag beats both.
    bad = {**no_env, "CARA_SERVER": "http://127.0.0.1:1"}
    assert caractrl(bad, "get", "projects").returncode == 1
    assert caractrl(bad, "get", "projects", "--server", server.url).returncode == 0


def test_completion_for_real(server: Server, env: dict[str, str]) -> None:
    assert (
        caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML + "---\n" + WORDPRESS_YAML).returncode
        == 0
    )
    assert "_CARACTRL_COMPLETE=bash_complete" in caractrl(env, "completion", "bash").stdout

    def complete(words: str) -> list[str]:
        line = f"caractrl {words}"
        cenv = {
            **env,
            "_CARACTRL_COMPLETE": "bash_complete",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(line.split()) - (0 if line.endswith(" ") else 1)),
        }
        r = subprocess.run([CARACTRL], env=cenv, capture_output=True, text=True, timeout=30)
        return [ln.split(",", 1)[1] for ln in r.stdout.splitlines()]

    assert complete("ge") == ["get"]
    assert complete("get pro") == ["projects", "project"]
    assert complete("get projects ") == ["my-project", "wordpress"]
    assert complete("delete project w") == ["wordpress"]


# ============================================================================================
# logs and port-forward, through the server's relay to a (fake) agent
# ============================================================================================


@pytest.fixture
def agent(server: Server, env: dict[str, str]) -> Iterator[FakeAgent]:
    with FakeAgent() as fake:
        register_node(server, "node-01", agent_port=fake.port)
        assert (
            invoke(env, "apply", "-f", "-", stdin=PROJECT_YAML + "---\n" + WORDPRESS_YAML).exit_code
            == 0
        )
        set_running(server, "my-project")
        set_running(server, "wordpress")
        yield fake


def test_logs(
    server: Server, env: dict[str, str], agent: FakeAgent, streams: list[Streaming]
) -> None:
    r = caractrl(env, "logs", "my-project")
    assert (r.returncode, r.stdout) == (0, "web line 1\nweb line 2\nweb line 3\n")
    r = caractrl(env, "logs", "wordpress/db", "--tail", "1", "--timestamps")
    assert r.stdout == "2026-04-07T12:00:00Z db line 3\n"
    # Every service, prefixed (Compose style), when none is named.
    r = caractrl(env, "logs", "wordpress")
    assert sorted(r.stdout.splitlines()) == sorted(
        [f"db  | db line {i}" for i in (1, 2, 3)] + [f"app | app line {i}" for i in (1, 2, 3)]
    )
    r = caractrl(env, "logs", "wordpress/nope")
    assert (r.returncode, r.stderr) == (
        1,
        'Error: project "wordpress" has no service "nope" (services: db, app)\n',
    )
    r = caractrl(env, "logs", "nope")
    assert (r.returncode, r.stderr) == (1, 'Error: project "nope" not found\n')

    follow = Streaming(env, "logs", "my-project", "-f")
    streams.append(follow)
    assert follow.line_matching("web followed") == "web followed"
    code, stderr = follow.interrupt()
    assert code == 0 and "Traceback" not in stderr


def test_port_forward(
    server: Server, env: dict[str, str], agent: FakeAgent, streams: list[Streaming]
) -> None:
    local = free_port()
    pf = Streaming(env, "port-forward", "wordpress/app", f"{local}:80", ":3306")
    streams.append(pf)
    assert pf.next_line() == f"Forwarding from 127.0.0.1:{local} -> 80"
    second = pf.next_line()
    m = re.fullmatch(r"Forwarding from 127\.0\.0\.1:(\d+) -> 3306", second)
    assert m, second
    for port, remote in ((local, "80"), (int(m.group(1)), "3306")):
        for _ in range(2):  # one WebSocket per connection, several connections
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"hello")
                data = b""
                while len(data) < len(remote) + 6:
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                assert data == f"{remote}:HELLO".encode()
            assert pf.next_line() == f"Handling connection for {port}"
    code, stderr = pf.interrupt()
    assert code == 0 and "Traceback" not in stderr

    r = caractrl(env, "port-forward", "wordpress", "8080:80")
    assert r.returncode == 1
    assert r.stderr == (
        'Error: project "wordpress" has several services; name one: wordpress/db, wordpress/app\n'
    )
    r = caractrl(env, "port-forward", "my-project/web", "99999")
    assert r.returncode == 2


def test_port_forward_needs_a_node(server: Server, env: dict[str, str]) -> None:
    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    r = caractrl(env, "port-forward", "my-project", "8080:80")
    assert (r.returncode, r.stderr) == (
        1,
        'Error: project "my-project" is not running on a node (phase Pending)\n',
    )


def _node_ref(server: Server, name: str) -> str | None:
    ref: str | None = server.get_raw(f"/api/v1/projects/{name}")["status"].get("nodeRef")
    return ref


def test_cordon_drain_uncordon(control_plane: Server, tmp_path: Path) -> None:
    """kubectl's node maintenance verbs, with the real scheduler placing the projects."""
    server, env = control_plane, cli_env(control_plane, tmp_path)
    register_node(server, "node-01")
    register_node(server, "node-02")

    def project(name: str) -> str:
        return PROJECT_YAML.replace("my-project", name)

    r = caractrl(env, "cordon", "node-02")
    assert (r.returncode, r.stdout) == (0, 'node "node-02" cordoned\n')
    assert caractrl(env, "cordon", "node-02").stdout == 'node "node-02" already cordoned\n'
    # Spreading would pick the empty node-02, but it is cordoned.
    for name in ("first", "second"):
        assert caractrl(env, "apply", "-f", "-", stdin=project(name)).returncode == 0
        wait_for(lambda n=name: _phase(server, n) == "Scheduled", f"{name} scheduled")
        assert _node_ref(server, name) == "node-01"
    set_phase(server, "first", "Running", "ContainersRunning")

    r = caractrl(env, "drain", "node-01")
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'node "node-01" drained (2 project(s) moved: first, second)\n'
    node = json.loads(caractrl(env, "-o", "json", "get", "node", "node-01").stdout)
    assert (node["spec"]["unschedulable"], node["status"]["state"]) == (True, "Draining")
    # Both nodes are out of scheduling: the moved projects wait.
    for name in ("first", "second"):
        assert _phase(server, name) == "Pending"

    r = caractrl(env, "uncordon", "node-02")
    assert (r.returncode, r.stdout) == (0, 'node "node-02" uncordoned\n')
    for name in ("first", "second"):
        wait_for(lambda n=name: _node_ref(server, n) == "node-02", f"{name} on node-02")
    r = caractrl(env, "describe", "project", "first")
    assert "NodeDrained" in r.stdout

    r = caractrl(env, "uncordon", "node-01")
    assert (r.returncode, r.stdout) == (0, 'node "node-01" uncordoned\n')
    node = json.loads(caractrl(env, "-o", "json", "get", "node", "node-01").stdout)
    assert (node["spec"]["unschedulable"], node["status"]["state"]) == (False, "Ready")

    r = caractrl(env, "drain", "no-such-node")
    assert (r.returncode, r.stderr) == (1, 'Error: node "no-such-node" not found\n')


# ============================================================================================
# events
# ============================================================================================


def test_get_events_and_describe_events(server: Server, env: dict[str, str]) -> None:
    from caravanserai.api.event import EventKind, new_event

    now = datetime.now(UTC)

    async def record(c: CaravanseraiClient) -> None:
        for reason, msg, ago, kind in (
            ("Scheduled", "Successfully assigned web to node-01", 120, EventKind.NORMAL),
            ("BackOff", "Back-off restarting failed container web-app", 30, EventKind.WARNING),
            ("BackOff", "Back-off restarting failed container web-app", 5, EventKind.WARNING),
        ):
            await c.events.record(new_event(
                "Project", "web", reason, msg, type_=kind, component="cara-agent",
                now=now - timedelta(seconds=ago),
            ))
        await c.events.record(new_event("Node", "node-01", "Ready", "node is ready", now=now))

    server.api(record)
    r = invoke(env, "get", "events")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [line.split()[2] for line in lines[1:]] == ["Scheduled", "BackOff", "Ready"]
    assert lines[2].split()[:4] == ["5s", "Warning", "BackOff", "project/web"]

    r = invoke(env, "get", "events", "--for", "node/node-01")
    assert [line.split()[3] for line in r.stdout.splitlines()[1:]] == ["node/node-01"]
    r = invoke(env, "get", "events", "--field-selector", "involvedObject.name=web", "-o", "json")
    doc = json.loads(r.stdout)
    assert doc["kind"] == "EventList"
    assert [(e["reason"], e["count"]) for e in doc["items"]] == [("Scheduled", 1), ("BackOff", 2)]
    r = invoke(env, "get", "events", "--for", "pod/web")
    assert (r.exit_code, r.stderr) == (
        2, "Error: --for 'pod/web': use project/NAME or node/NAME (see 'caractrl get --help')\n"
    )

    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    server.api(lambda c: c.events.record(new_event(
        "Project", "my-project", "Scheduled", "Successfully assigned my-project to node-01",
        component="scheduler", now=datetime.now(UTC),
    )))
    r = invoke(env, "describe", "project", "my-project")
    lines = r.stdout.splitlines()
    events = lines[lines.index("Events:") + 1:]
    assert events[0].split() == ["Type", "Reason", "Age", "From", "Message"]
    # The server's own Created (written in the background) may or may not be there yet.
    assert any(row.split()[:2] == ["Normal", "Scheduled"] and "scheduler" in row
               for row in events[2:])


def test_get_events_watch_prints_each_new_occurrence(
    server: Server, env: dict[str, str], streams: list[Streaming]
) -> None:
    from caravanserai.api.event import EventKind, new_event

    def backoff() -> Any:
        return new_event(
            "Project", "crashy", "BackOff", "Back-off restarting failed container crashy-app",
            type_=EventKind.WARNING, component="cara-agent", now=datetime.now(UTC),
        )

    watch = Streaming(env, "get", "events", "--for", "project/crashy", "-w")
    streams.append(watch)
    assert watch.next_line().split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    # Another object's event is not selected; each occurrence of ours is a row (the second
    # one aggregated into the same event, as kubectl get events -w prints a count bump).
    server.api(lambda c: c.events.record(new_event("Project", "other", "Created", "x",
                                                   now=datetime.now(UTC))))
    server.api(lambda c: c.events.record(backoff()))
    row = watch.line_matching(r"Warning\s+BackOff")
    assert row.split()[3:5] == ["project/crashy", "Back-off"]
    server.api(lambda c: c.events.record(backoff()))
    assert "project/crashy" in watch.line_matching(r"Warning\s+BackOff")
    code, stderr = watch.interrupt()
    assert code == 0 and "Traceback" not in stderr, stderr
