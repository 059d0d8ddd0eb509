"""``GET /api/v1/projects/{name}/exec?service=&command=…&tty=&stdin=``: a command in a
service's container, relayed to the agent of the project's node like port-forward (same
resolution of project → node → agent, same credentials towards the agent, same errors).

The WebSocket's messages pass through unchanged; their framing (a channel byte: stdin,
stdout, stderr, exit status, resize) is described in ``agent/exec_api.py``.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import aiohttp
from aiohttp import web

from caravanserai.api.problems import BadRequest, Problem, error_from_problem
from caravanserai.logging import get_logger
from caravanserai.server.relay import (
    CONNECT_TIMEOUT,
    BadGateway,
    _agent_headers,
    _bool,
    _splice,
    agent_session,
    resolve_target,
)
from caravanserai.server.routing import OBJECT_NAME, Param, Reply, RouteSpec

log = get_logger("caravanserai.server.relay_exec")

MAX_COMMAND_WORDS = 256


async def exec_(request: web.Request) -> web.StreamResponse:
    command = request.query.getall("command", [])
    if not command:
        raise BadRequest("query parameter command is required (repeat it for each word)")
    if len(command) > MAX_COMMAND_WORDS:
        raise BadRequest(f"at most {MAX_COMMAND_WORDS} command words")
    tty = _bool(request, "tty")
    stdin = _bool(request, "stdin")
    target = await resolve_target(request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise BadRequest("exec needs a WebSocket upgrade request")
    url = f"{target.base_url}/api/v1/exec/{quote(target.project)}/{quote(target.service)}"
    params = [("command", c) for c in command] + [
        ("tty", str(tty).lower()), ("stdin", str(stdin).lower())
    ]
    session = agent_session(request, await _agent_headers(request, target))
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT * 2):
                upstream = await session.ws_connect(
                    url, params=params, heartbeat=30, max_msg_size=0
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (400, 404, 409, 501, 503):
                raise error_from_problem(
                    Problem(title="", status=exc.status, detail=f"agent: {exc.message}")
                ) from None
            raise BadGateway(
                f'agent of node "{target.node}" refused the exec ({exc.status}): {exc.message}'
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BadGateway(
                f'cannot reach the agent of node "{target.node}" at {target.base_url}: {exc}'
            ) from None
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=0)
        await ws.prepare(request)
        log.info("relay.exec_opened", project=target.project, service=target.service,
                 node=target.node, tty=tty)
        try:
            await _splice(ws, upstream)
        finally:
            await upstream.close()
            await ws.close()
            log.info("relay.exec_closed", project=target.project, service=target.service)
        return ws
    finally:
        await session.close()


def exec_routes() -> list[RouteSpec]:
    """The exec route, for the server's route table (and its OpenAPI document)."""
    return [
        RouteSpec(
            "GET",
            "/api/v1/projects/{name}/exec",
            exec_,
            "execProject",
            "Run a command in a service's container (WebSocket)",
            "projects",
            params=(
                Param("name", "path", OBJECT_NAME, "The project's name.", True),
                Param("service", "query", {"type": "string"},
                      "The service (optional when the project has exactly one)."),
                Param("command", "query", {"type": "string"},
                      "One word of the command; repeated for each word.", True),
                Param("tty", "query", {"type": "boolean"}, "Allocate a terminal."),
                Param("stdin", "query", {"type": "boolean"}, "Pass stdin to the command."),
            ),
            replies=(Reply(101, "Switching to the WebSocket; see agent/exec_api.py"),),
            problems=(400, 404, 405, 409, 502, 503),
            description=(
                "Needs a WebSocket upgrade. Relayed to the agent of the project's node, which "
                "runs the command with Docker exec. Binary messages start with a channel byte: "
                "0 stdin, 1 stdout, 2 stderr, 3 exit status (JSON), 4 resize (JSON)."
            ),
        ),
    ]
