"""Logs (a text stream) and port-forward (a WebSocket) through the server's relay routes.

The typed client covers the JSON routes; these two carry raw bytes, so they are opened here
on the client's own HTTP session (same base URL, token and connection pool) with its error
types: a problem response becomes the typed error, an unreachable server
``ServerUnreachable``. When the client grows ``logs()`` / ``port_forward()`` methods this
module shrinks to calls of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import aiohttp

from caravanserai.api.problems import CaravanseraiError, Problem, error_from_problem
from caravanserai.client.errors import RequestTimeout, ServerUnreachable
from caravanserai.client.http import CaravanseraiClient, ConnectionLost

_CHUNK = 64 * 1024


def _session(client: CaravanseraiClient) -> aiohttp.ClientSession:
    # The client's session already carries the Authorization header and User-Agent.
    return client._get_session()


def _project_path(project: str, route: str) -> str:
    return f"/api/v1/projects/{quote(project, safe='')}/{route}"


def _problem(status: int, reason: str | None, body: bytes, content_type: str) -> CaravanseraiError:
    problem: Problem | None = None
    if "json" in content_type:
        try:
            problem = Problem.model_validate_json(body)
        except ValueError:
            problem = None
    if problem is None:
        text = body.decode(errors="replace").strip()[:500]
        problem = Problem(title=reason or "Error", status=status, detail=text)
    return error_from_problem(problem)


async def stream_logs(
    client: CaravanseraiClient,
    project: str,
    service: str | None,
    *,
    follow: bool,
    tail: int | None,
    timestamps: bool,
) -> AsyncIterator[bytes]:
    """The service's output as it arrives (stdout and stderr merged by the agent)."""
    params: list[tuple[str, str]] = [
        ("follow", "true" if follow else "false"),
        ("timestamps", "true" if timestamps else "false"),
        ("tail", "all" if tail is None or tail < 0 else str(tail)),
    ]
    if service:
        params.append(("service", service))
    url = client.url(_project_path(project, "logs"))
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=client.timeout,
        # A followed stream may be silent for hours; a bounded one should keep coming.
        sock_read=None if follow else client.timeout,
    )
    try:
        async with _session(client).get(url, params=params, timeout=timeout) as resp:
            if resp.status >= 400:
                raise _problem(resp.status, resp.reason, await resp.read(), resp.content_type)
            async for chunk in resp.content.iter_chunked(_CHUNK):
                yield chunk
    except TimeoutError as exc:
        raise RequestTimeout(f"logs of {project}", client.timeout) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ServerUnreachable(client.base_url, _reason(exc)) from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise ConnectionLost(f"logs of {project}: connection lost: {exc}") from exc


@asynccontextmanager
async def open_tunnel(
    client: CaravanseraiClient, project: str, service: str | None, port: int
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """One WebSocket carrying one TCP connection to ``service``'s ``port``."""
    params: list[tuple[str, str]] = [("port", str(port))]
    if service:
        params.append(("service", service))
    url = client.url(_project_path(project, "portforward"))
    # Imported here: caractrl's start-up does not pay for the server-side module.
    from caravanserai.connections import WS_MAX_MESSAGE_BYTES

    try:
        ws = await _session(client).ws_connect(
            url,
            params=params,
            timeout=aiohttp.ClientWSTimeout(ws_close=10),
            heartbeat=30,
            max_msg_size=WS_MAX_MESSAGE_BYTES,
        )
    except aiohttp.WSServerHandshakeError as exc:
        # The handshake failed with an HTTP answer: aiohttp keeps only status and reason.
        raise _problem(exc.status, exc.message, b"", "") from None
    except TimeoutError as exc:
        raise RequestTimeout(f"port-forward to {project}", client.timeout) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ServerUnreachable(client.base_url, _reason(exc)) from exc
    try:
        yield ws
    finally:
        await ws.close()


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "os_error", None)
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return str(exc) or type(exc).__name__
