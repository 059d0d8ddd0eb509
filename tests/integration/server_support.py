"""Fixtures and helpers for the cara-server HTTP tests (real PostgreSQL, real aiohttp server).

A test module turns the fixture functions into its fixtures by assignment, e.g.
``api = pytest.fixture(server_support.serve_api, name="api")`` (so linters see no
unused import shadowed by a test parameter).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from caravanserai.server.app import create_app
from caravanserai.server.config import ServerConfig
from caravanserai.store.postgres import PostgresStore

REPO = Path(__file__).resolve().parents[2]
CARA_SERVER = str(Path(sys.executable).with_name("cara-server"))


def manifest(name: str = "nginx-demo", **spec: Any) -> dict[str, Any]:
    """The seeds' minimal project (``curl`` example of POST /api/v1/projects)."""
    body: dict[str, Any] = {
        "apiVersion": "caravanserai/v1",
        "kind": "Project",
        "metadata": {"name": name},
        "spec": {"services": [{"name": "web", "image": "nginx:alpine"}], **spec},
    }
    return body


def node_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"hostname": name, **spec},
    }


@dataclass
class Api:
    """A running server (``TestServer`` on a real port) and a client session to it."""

    server: TestServer
    session: aiohttp.ClientSession
    store: PostgresStore
    config: ServerConfig
    base: str = field(init=False)

    def __post_init__(self) -> None:
        self.base = str(self.server.make_url("")).rstrip("/")

    def url(self, path: str) -> str:
        return self.base + path

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """One request; returns (status, decoded body or None, response)."""
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if body is not None:
            kwargs["json"] = body
        if data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.url(path), **kwargs) as resp:
            raw = await resp.read()
            decoded: Any = None
            if raw:
                decoded = json.loads(raw) if "json" in resp.content_type else raw.decode()
            return resp.status, decoded, resp

    async def create_project(self, name: str, **spec: Any) -> dict[str, Any]:
        status, body, _ = await self.call("POST", "/api/v1/projects", manifest(name, **spec))
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    async def create_node(self, name: str) -> dict[str, Any]:
        status, body, _ = await self.call("POST", "/api/v1/nodes", node_manifest(name))
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    async def patch_phase(self, name: str, phase: str, **extra: Any) -> int:
        status, body, _ = await self.call(
            "PATCH", f"/api/v1/projects/{name}/status", {"phase": phase, **extra}
        )
        assert status in (204, 409, 422), body
        return status

    async def get(self, plural: str, name: str) -> dict[str, Any]:
        status, body, _ = await self.call("GET", f"/api/v1/{plural}/{name}")
        assert status == 200, body
        return body  # type: ignore[no-any-return]


def make_config(database_url: str, **overrides: Any) -> ServerConfig:
    values: dict[str, Any] = {
        "database_url": database_url,
        "bookmark_interval": 0.3,
        "watch_timeout": 60.0,
        "request_timeout": 20.0,
        "shutdown_timeout": 5.0,
        # Authorization is not these tests' subject (tests/integration/test_auth_*.py):
        # anonymous requests act as admin, as a server with --insecure-allow-anonymous.
        "insecure_allow_anonymous": True,
    }
    values.update(overrides)
    return ServerConfig(**values)


async def serve_api(store: PostgresStore, database_url: str) -> AsyncIterator[Api]:
    """cara-server's app on the test's store, served on 127.0.0.1 and a free port."""
    config = make_config(database_url)
    server = TestServer(create_app(config, store), host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        yield Api(server, session, store, config)
    finally:
        await session.close()
        await server.close()


# -- watch streams over HTTP ---------------------------------------------------------------


class Stream:
    """A watch stream read line by line (events as dicts)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.events: list[dict[str, Any]] = []
        self.ended = False

    async def next(self, within: float = 10.0) -> dict[str, Any] | None:
        """The next event; None when the stream ended."""
        async with asyncio.timeout(within):
            while True:
                line = await self.resp.content.readline()
                if not line:
                    self.ended = True
                    return None
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    self.events.append(event)
                    return event

    async def until(self, predicate: Any, within: float = 10.0) -> dict[str, Any]:
        """Read until an event satisfies ``predicate`` (fails on timeout or end)."""
        async with asyncio.timeout(within):
            while True:
                event = await self.next(within)
                assert event is not None, f"stream ended; got {self.events}"
                if predicate(event):
                    return event

    async def take(
        self, n: int, within: float = 10.0, *, skip_bookmarks: bool = True
    ) -> list[dict[str, Any]]:
        """The next ``n`` events (BOOKMARKs skipped unless asked); fails on timeout or end."""
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(within):
            while len(out) < n:
                event = await self.next(within)
                assert event is not None, f"stream ended after {out}"
                if skip_bookmarks and event["type"] == "BOOKMARK":
                    continue
                out.append(event)
        return out

    async def close(self) -> None:
        self.resp.close()


async def open_watch(api: Api, plural: str, **params: Any) -> Stream:
    query: list[tuple[str, str]] = [("watch", "true")]
    for key, value in params.items():
        values = value if isinstance(value, list) else [value]
        query.extend((key, str(v)) for v in values)
    resp = await api.session.get(
        api.url(f"/api/v1/{plural}"), params=query, timeout=aiohttp.ClientTimeout(total=None)
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/x-ndjson"
    return Stream(resp)


def names(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events]


# -- the real program in a subprocess ------------------------------------------------------


_LISTENING = re.compile(r'"event":\s*"listening"')


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    url: str
    lines: list[str]
    drain: threading.Thread | None = None

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        """The first stderr line containing ``text`` (read by the drain thread)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None and not (self.drain and self.drain.is_alive()):
                break
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r}: {''.join(self.lines[-20:])}")


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)


def start_server_process(
    env: dict[str, str], *, cwd: Path, args: list[str] | None = None, timeout: float = 60.0
) -> ServerProcess:
    """Run ``cara-server --port 0`` and wait for its ``listening`` line (JSON logs)."""
    full_env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV}
    # Open on loopback unless a test says otherwise: authorization has its own tests
    # (test_auth_*.py), these are about everything else.
    full_env["CARA_INSECURE_ALLOW_ANONYMOUS"] = "true"
    full_env.update(env)
    proc = subprocess.Popen(
        [CARA_SERVER, "--host", "127.0.0.1", "--port", "0", *(args or [])],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"cara-server exited {proc.wait()}: {''.join(lines)}")
        lines.append(line)
        if _LISTENING.search(line):
            address = json.loads(line)["address"]
            # Keep draining stderr: a full pipe would block the server's logging (and with
            # it every request) once a test has made enough of them.
            drain = threading.Thread(target=_drain, args=(proc, lines), daemon=True)
            drain.start()
            return ServerProcess(proc, f"http://{address}", lines, drain)
    proc.kill()
    raise AssertionError(f"cara-server did not start: {''.join(lines)}")


def stop_server_process(
    server: ServerProcess, timeout: float = 20.0, *, send_signal: bool = True
) -> int:
    """SIGTERM (unless already sent: a second one aborts the graceful shutdown), then wait
    for the exit and collect the rest of stderr; returns the exit status."""
    import signal

    if send_signal and server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    if server.drain is not None:
        server.drain.join(timeout=10)  # the rest of stderr, up to its end
    return server.proc.returncode


_SERVER_ENV = {
    "DATABASE_URL", "HOST", "PORT", "DEBUG", "OTEL_COLLECTOR_URL",
    *(k for k in os.environ if k.startswith("CARA_") and k != "CARA_TEST_DATABASE_URL"),
}


def run_server_process(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """The real ``cara-server`` program on this test's database (short watch timeout)."""
    server = start_server_process(
        {"DATABASE_URL": database_url, "CARA_WATCH_TIMEOUT": "2", "CARA_BOOKMARK_INTERVAL": "1"},
        cwd=tmp_path,
    )
    try:
        yield server
    finally:
        stop_server_process(server)
