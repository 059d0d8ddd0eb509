"""Logs and port-forward through the server: ``caractrl`` needs only the server's address.

- ``GET /api/v1/projects/{name}/logs?service=&follow=&tail=&timestamps=`` streams the
  service's container output (``text/plain``) from the agent of the project's node.
- ``GET /api/v1/projects/{name}/portforward?service=&port=`` is a WebSocket carrying one TCP
  connection to the service's container port (binary messages both ways).

The project's ``status.nodeRef`` names the node; the node's ``status.network.ip`` and
``agentPort`` (default 9090) name its agent, whose own routes are ``/api/v1/logs/...`` and
``/api/v1/forward/...`` (``agent/agent_api.py``). ``service`` may be omitted when the
project has exactly one service.

``relay_routes()`` is part of the server's route table, so the routes are in the OpenAPI
document too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from caravanserai.api.node import Node, parse_node_ip
from caravanserai.api.problems import (
    BadRequest,
    CaravanseraiError,
    Conflict,
    NotFound,
    Problem,
    Unavailable,
    error_from_problem,
)
from caravanserai.api.project import Project
from caravanserai.logging import get_logger
from caravanserai.server.authn import TOKENS
from caravanserai.server.routing import OBJECT_NAME, Param, Reply, RouteSpec, Schema
from caravanserai.server.state import CONFIG, STORE
from caravanserai.streaming import while_client_connected

log = get_logger("caravanserai.server.relay")

# The relay's TLS context for agents (CARA_AGENT_CA); absent: plain HTTP to agents.
AGENT_SSL = web.AppKey("agent_ssl", ssl.SSLContext)

DEFAULT_AGENT_PORT = 9090
CONNECT_TIMEOUT = 5.0
# Non-follow logs are bounded; follow streams and tunnels live as long as both ends do.
READ_TIMEOUT = 30.0


class BadGateway(CaravanseraiError):
    status, title, slug = 502, "Bad Gateway", "bad-gateway"


@dataclass(frozen=True)
class Target:
    project: str
    service: str
    node: str
    base_url: str  # http://ip:port of the agent


def _bool(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise BadRequest(f"query parameter {name} must be true or false, not {value!r}")


def _tail(request: web.Request) -> str:
    value = (request.query.get("tail") or "all").strip()
    if value in ("all", "-1"):
        return "all"
    if not value.isdigit():
        raise BadRequest(f"query parameter tail must be a number of lines or all, not {value!r}")
    return value


async def resolve_target(request: web.Request) -> Target:
    """The agent serving ``service`` of project ``name`` (problems for every way it fails)."""
    store = request.app[STORE]
    name = request.match_info["name"]
    try:
        project = Project.model_validate(await store.get("Project", name))
    except NotFound:
        raise NotFound(f'project "{name}" not found') from None
    services = [s.name for s in project.spec.services]
    service = request.query.get("service")
    if not service:
        if len(services) != 1:
            # Which parameters are needed depends on the stored project: 409, as other
            # answers that depend on its state (kube-apiserver says 400 for a pod).
            raise Conflict(
                f'query parameter service is required: project "{name}" has services '
                + ", ".join(services)
            )
        service = services[0]
    if service not in services:
        raise NotFound(f'project "{name}" has no service "{service}"')
    node_name = project.status.node_ref
    if not node_name:
        raise Conflict(f'project "{name}" is not on a node (phase {project.status.phase})')
    try:
        node = Node.model_validate(await store.get("Node", node_name))
    except NotFound:
        # The project's state, not the server, is in the way (as "not on a node"): 409.
        raise Conflict(f'node "{node_name}" of project "{name}" is not registered') from None
    except ValidationError:
        # Written before addresses were validated: never connect to what it names.
        raise Unavailable(
            f'node "{node_name}" has an invalid address; it must heartbeat again'
        ) from None
    scheme = "https" if request.app.get(AGENT_SSL) is not None else "http"
    return Target(name, service, node_name, agent_base_url(node, scheme))


def agent_session(
    request: web.Request, headers: dict[str, str], **kw: Any
) -> aiohttp.ClientSession:
    """A session to an agent: HTTPS trusting ``CARA_AGENT_CA`` when the server has one."""
    ssl_context = request.app.get(AGENT_SSL)
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    return aiohttp.ClientSession(headers=headers, connector=connector, **kw)


def agent_base_url(node: Node, scheme: str = "http") -> str:
    """``http(s)://ip:port`` of the node's agent, built only from a validated IP and port.

    The model already refused anything but an IP address and a port in 1-65535 when the node
    wrote them; parsing again here means no stored string is ever pasted into a URL.
    """
    ip = node.status.network.ip
    if not ip:
        raise Conflict(f'node "{node.metadata.name}" has not reported its address')
    try:
        address = ipaddress.ip_address(parse_node_ip(ip))
    except ValueError:
        raise Unavailable(f'node "{node.metadata.name}" has an invalid address') from None
    port = node.status.network.agent_port or DEFAULT_AGENT_PORT
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{scheme}://{host}:{port}"


async def _agent_headers(request: web.Request, target: Target) -> dict[str, str]:
    """The node's own secret (established when it joined), never the caller's token nor the
    cluster's: a compromised agent learns nothing it could use against the API. A node that
    never joined gets no credential at all (a real agent then refuses, 401)."""
    tokens = request.app.get(TOKENS)
    secret = await tokens.agent_secret(target.node) if tokens is not None else None
    return {"Authorization": f"Bearer {secret}"} if secret else {}


async def _agent_error(resp: aiohttp.ClientResponse, target: Target) -> CaravanseraiError:
    """The agent's problem passed on (4xx, 503) or a 502 naming the node."""
    text = (await resp.text(errors="replace"))[:2000]
    problem: Problem | None = None
    with contextlib.suppress(ValueError):
        problem = Problem.model_validate_json(text)
    if problem is not None and (400 <= problem.status < 500 or problem.status == 503):
        return error_from_problem(problem)
    if problem is not None:
        return BadGateway(f'agent of node "{target.node}": {problem.detail}')
    return BadGateway(f'agent of node "{target.node}" answered {resp.status}: {text.strip()}')


async def logs(request: web.Request) -> web.StreamResponse:
    follow = _bool(request, "follow")
    timestamps = _bool(request, "timestamps")
    tail = _tail(request)
    target = await resolve_target(request)
    url = (
        f"{target.base_url}/api/v1/logs/{quote(target.project)}/{quote(target.service)}"
    )
    params = {"follow": str(follow).lower(), "timestamps": str(timestamps).lower(), "tail": tail}
    headers = await _agent_headers(request, target)
    session = agent_session(request, headers, auto_decompress=False)
    try:
        resp = await session.get(
            url,
            params=params,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT,
                sock_read=None if follow else READ_TIMEOUT,
            ),
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        await session.close()
        raise BadGateway(
            f'cannot reach the agent of node "{target.node}" at {target.base_url}: {exc}'
        ) from None
    if resp.status != 200:
        try:
            raise await _agent_error(resp, target)
        finally:
            resp.release()
            await session.close()

    async def body() -> AsyncIterator[bytes]:
        # Written by aiohttp after the handler returned, so a follow stream is not cut by
        # the per-request timeout of the API routes.
        try:
            async for chunk in while_client_connected(resp.content.iter_any(), request):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("relay.logs_ended", project=target.project, service=target.service,
                     error=str(exc))
        finally:
            resp.release()
            await session.close()

    return web.Response(
        body=body(),
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


async def portforward(request: web.Request) -> web.StreamResponse:
    raw_port = request.query.get("port", "")
    try:
        port = int(raw_port)
        if not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise BadRequest(
            f"query parameter port must be a number in 1-65535, not {raw_port!r}"
        ) from None
    target = await resolve_target(request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise BadRequest("port-forward needs a WebSocket upgrade request")
    url = (
        f"{target.base_url}/api/v1/forward/{quote(target.project)}/"
        f"{quote(target.service)}/{port}"
    )
    session = agent_session(request, await _agent_headers(request, target))
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT * 2):
                upstream = await session.ws_connect(
                    url, heartbeat=30, max_msg_size=request.app[CONFIG].ws_max_message_bytes
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (400, 404, 503):
                raise error_from_problem(
                    Problem(title="", status=exc.status, detail=f"agent: {exc.message}")
                ) from None
            raise BadGateway(
                f'agent of node "{target.node}" refused the tunnel ({exc.status}): {exc.message}'
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BadGateway(
                f'cannot reach the agent of node "{target.node}" at {target.base_url}: {exc}'
            ) from None
        # A bigger message closes the tunnel (1009) instead of being buffered whole.
        ws = web.WebSocketResponse(
            heartbeat=30, max_msg_size=request.app[CONFIG].ws_max_message_bytes
        )
        await ws.prepare(request)
        log.info("relay.portforward_opened", project=target.project, service=target.service,
                 port=port, node=target.node)
        try:
            await _splice(ws, upstream)
        finally:
            await upstream.close()
            await ws.close()
            log.info("relay.portforward_closed", project=target.project,
                     service=target.service, port=port)
        return ws
    finally:
        await session.close()


async def _splice(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    """Relay messages both ways until either side closes."""

    async def down() -> None:
        async for msg in upstream:
            if msg.type == aiohttp.WSMsgType.BINARY:
                await client.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                await client.send_str(msg.data)
            else:
                break

    async def up() -> None:
        async for msg in client:
            if msg.type == aiohttp.WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                await upstream.send_str(msg.data)
            else:
                break

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


_NAME = Param("name", "path", OBJECT_NAME, "The project's name.", True)
_SERVICE = Param(
    "service", "query", {"type": "string"},
    "The service (optional when the project has exactly one).",
)


def relay_routes() -> list[RouteSpec]:
    """The relay routes, for the server's route table (and so its OpenAPI document)."""
    text: dict[str, Schema] = {"text/plain": {"type": "string"}}
    return [
        RouteSpec(
            "GET",
            "/api/v1/projects/{name}/logs",
            logs,
            "readProjectLogs",
            "Stream a service's container logs",
            "projects",
            params=(
                _NAME,
                _SERVICE,
                Param("follow", "query", {"type": "boolean"}, "Keep streaming new output."),
                Param("tail", "query", {"type": "string", "pattern": "^(all|[0-9]+)$"},
                      "Lines from the end (default all)."),
                Param("timestamps", "query", {"type": "boolean"}, "Prefix RFC 3339 times."),
            ),
            replies=(Reply(200, "The output, stdout and stderr merged", text),),
            problems=(400, 404, 405, 409, 502, 503),
            description=(
                "Relayed from the agent of the project's node (status.nodeRef → the node's "
                "status.network.ip and agentPort)."
            ),
        ),
        RouteSpec(
            "GET",
            "/api/v1/projects/{name}/portforward",
            portforward,
            "portForwardProject",
            "Tunnel one TCP connection to a service's port (WebSocket)",
            "projects",
            params=(
                _NAME,
                _SERVICE,
                Param("port", "query", {"type": "integer", "minimum": 1, "maximum": 65535},
                      "The container port.", True),
            ),
            replies=(Reply(101, "Switching to the WebSocket; binary messages carry the bytes"),),
            problems=(400, 404, 405, 409, 502, 503),
            description=(
                "Needs a WebSocket upgrade. Relayed to the agent of the project's node, which "
                "connects to the container's address on the project network."
            ),
        ),
    ]

