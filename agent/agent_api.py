"""The agent's own HTTP server (``AGENT_LISTEN_PORT``, default 9090).

- ``GET /healthz`` → ``OK``
- ``GET /api/v1/logs/{project}/{service}?follow=&tail=&timestamps=`` → the container's
  output (stdout and stderr demultiplexed), streamed as ``text/plain``.
- ``GET /api/v1/forward/{project}/{service}/{port}`` → a WebSocket carrying one TCP
  connection to the container's port (binary messages both ways).
- ``GET /api/v1/exec/{project}/{service}?command=…`` → a WebSocket running a command in the
  container (``agent/exec_api.py``).

Only containers this agent manages (labels ``cara.project`` and ``cara.node``) are served.
``cara-server`` relays both to users (``caravanserai/server/relay.py``), so ``caractrl``
only needs the server's address. Errors are problem+json.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from http import HTTPStatus

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from agent import naming
from agent.runtime import ContainerInfo, EngineUnavailable, Runtime
from caravanserai.connections import WS_MAX_MESSAGE_BYTES
from caravanserai.streaming import while_client_connected

log = structlog.get_logger("agent.api")

CHUNK = 32 * 1024


def problem(status: int, title: str, detail: str) -> web.Response:
    body = {
        "type": f"https://caravanserai.dev/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


def parse_bool(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def parse_tail(value: str | None) -> str:
    if value is None or value in ("", "all", "-1"):
        return "all"
    if not value.isdigit():
        raise ValueError(f"tail: expected a number of lines or 'all', got {value!r}")
    return value


class AgentAPI:
    def __init__(
        self,
        runtime: Runtime,
        node_name: str,
        token: str,
        *,
        ws_max_message_bytes: int = WS_MAX_MESSAGE_BYTES,
    ) -> None:
        self.runtime = runtime
        self.ws_max_message_bytes = ws_max_message_bytes
        self.node_name = node_name
        # Always closed: the per-node secret the server's relay presents (see agent/identity).
        self.app = web.Application(middlewares=[self._auth])
        self._expected = f"Bearer {token}".encode()
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/api/v1/logs/{project}/{service}", self.logs)
        self.app.router.add_get("/api/v1/forward/{project}/{service}/{port}", self.forward)
        self.app.router.add_get("/api/v1/exec/{project}/{service}", self.exec)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Logs and tunnels into containers are for the server's relay only.
        if request.path != "/healthz":
            # surrogateescape: non-UTF-8 header bytes are a wrong secret (401), not a 500.
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, self._expected):
                return problem(401, "Unauthorized", "missing or invalid bearer token")
        return await handler(request)

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _container(self, project: str, service: str) -> ContainerInfo | None:
        info = await self.runtime.inspect_container(naming.container_name(project, service))
        if info is None:
            return None
        labels = info.labels
        if (
            labels.get(naming.LABEL_PROJECT) != project
            or labels.get(naming.LABEL_SERVICE) != service
            or labels.get(naming.LABEL_NODE) != self.node_name
        ):
            return None
        return info

    async def _find(
        self, project: str, service: str, *, not_running: int | None = None
    ) -> ContainerInfo | web.Response:
        """The service's container, or the problem to answer: 503 when the engine does not
        answer, 404 when there is no such container and, with ``not_running`` (the status
        to use), when it exists but is not running."""
        try:
            info = await self._container(project, service)
        except EngineUnavailable as exc:
            return problem(503, "Service Unavailable", str(exc))
        if info is None:
            return problem(
                404, "Not Found", f'no container for service "{service}" of project "{project}"'
            )
        if not_running is not None and info.state != "running":
            return problem(
                not_running, HTTPStatus(not_running).phrase,
                f'the container of service "{service}" is {info.state}, not running',
            )
        return info

    async def logs(self, request: web.Request) -> web.StreamResponse:
        project = request.match_info["project"]
        service = request.match_info["service"]
        try:
            follow = parse_bool(request.query.get("follow"), "follow")
            timestamps = parse_bool(request.query.get("timestamps"), "timestamps")
            tail = parse_tail(request.query.get("tail"))
        except ValueError as exc:
            return problem(400, "Bad Request", str(exc))
        info = await self._find(project, service)
        if isinstance(info, web.Response):
            return info
        response = web.StreamResponse(
            headers={"Content-Type": "text/plain; charset=utf-8",
                     "X-Content-Type-Options": "nosniff"}
        )
        stream = self.runtime.logs(info.id, follow=follow, tail=tail, timestamps=timestamps)
        try:
            first = await anext(stream, None)
        except EngineUnavailable as exc:
            return problem(503, "Service Unavailable", str(exc))
        await response.prepare(request)
        try:
            if first is not None:
                await response.write(first)
                async for chunk in while_client_connected(stream, request):
                    await response.write(chunk)
        except (ConnectionResetError, aiohttp.ClientError, EngineUnavailable) as exc:
            log.info("log stream ended", project=project, service=service, error=str(exc))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def exec(self, request: web.Request) -> web.StreamResponse:
        return await _exec(self, request)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        project = request.match_info["project"]
        service = request.match_info["service"]
        try:
            port = int(request.match_info["port"])
            if not 1 <= port <= 65535:
                raise ValueError
        except ValueError:
            return problem(400, "Bad Request", "port must be a number in 1-65535")
        info = await self._find(project, service, not_running=503)
        if isinstance(info, web.Response):
            return info
        if info.health in ("starting", "unhealthy"):
            return problem(
                503, "Service Unavailable",
                f'service "{service}" is not ready (health: {info.health})',
            )
        ip = info.ips.get(naming.network_name(project)) or next(iter(info.ips.values()), None)
        if ip is None:
            return problem(503, "Service Unavailable", "the container has no IP address")
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection(ip, port)
        except (OSError, TimeoutError) as exc:
            return problem(
                502, "Bad Gateway", f"cannot connect to {service}:{port} ({ip}): {exc}"
            )
        # A bigger message closes the tunnel (1009) instead of being buffered whole.
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=self.ws_max_message_bytes)
        try:
            await ws.prepare(request)
            log.info("port-forward opened", project=project, service=service, port=port)
            await pump(ws, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            await ws.close()
            log.info("port-forward closed", project=project, service=service, port=port)
        return ws


async def _exec(api: AgentAPI, request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/exec/{project}/{service}?command=…&tty=&stdin=`` (WebSocket; see
    ``agent/exec_api.py`` for the messages)."""
    from agent.exec_api import serve_exec

    project = request.match_info["project"]
    service = request.match_info["service"]
    command = request.query.getall("command", [])
    try:
        tty = parse_bool(request.query.get("tty"), "tty")
        stdin = parse_bool(request.query.get("stdin"), "stdin")
    except ValueError as exc:
        return problem(400, "Bad Request", str(exc))
    if not command:
        return problem(400, "Bad Request", "command: at least one is required")
    docker = getattr(api.runtime, "docker", None)
    if docker is None:
        return problem(501, "Not Implemented", "this agent's runtime cannot exec")
    info = await api._find(project, service, not_running=409)
    if isinstance(info, web.Response):
        return info
    return await serve_exec(request, docker, info.id, command, tty=tty, stdin=stdin)


async def pump(
    ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Copy TCP → WebSocket (binary messages) and WebSocket → TCP until either side ends."""

    async def tcp_to_ws() -> None:
        while data := await reader.read(CHUNK):
            await ws.send_bytes(data)

    async def ws_to_tcp() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                writer.write(msg.data)
                await writer.drain()
            elif msg.type == aiohttp.WSMsgType.TEXT:
                writer.write(msg.data.encode())
                await writer.drain()
            else:
                break
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()

    tasks = [asyncio.create_task(tcp_to_ws()), asyncio.create_task(ws_to_tcp())]
    try:
        # The tunnel ends when the TCP side closes, or the WebSocket closes.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
