"""The agent's own API requires its per-node secret (logs and tunnels into containers are for
the server's relay only); /healthz stays open."""

from __future__ import annotations

from typing import Any, cast

from aiohttp.test_utils import TestClient, TestServer

from agent.agent_api import AgentAPI
from agent.runtime import Runtime


class _NoContainers:
    async def inspect_container(self, name: str) -> None:
        return None


async def _client(token: str) -> TestClient[Any, Any]:
    api = AgentAPI(cast(Runtime, _NoContainers()), "node-1", token=token)
    client: TestClient[Any, Any] = TestClient(TestServer(api.app))
    await client.start_server()
    return client


async def test_token_required_on_the_api_but_not_on_healthz() -> None:
    client = await _client("t0ken")
    try:
        assert (await client.get("/healthz")).status == 200
        for headers in ({}, {"Authorization": "Bearer nope"}):
            resp = await client.get("/api/v1/logs/p/web", headers=headers)
            assert resp.status == 401
            assert resp.content_type == "application/problem+json"
        # With the token the request reaches the handler: no such container here.
        resp = await client.get("/api/v1/logs/p/web", headers={"Authorization": "Bearer t0ken"})
        assert resp.status == 404
    finally:
        await client.close()


async def test_the_api_is_always_closed() -> None:
    """There is no open mode: the agent always has its per-node secret (it joined)."""
    client = await _client("s3cret")
    try:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "s3cret"}):
            assert (await client.get("/api/v1/logs/p/web", headers=headers)).status == 401
    finally:
        await client.close()


async def test_a_non_utf8_authorization_header_is_a_401_not_a_500() -> None:
    import asyncio

    client = await _client("t0ken")
    try:
        server = client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /api/v1/logs/p/web HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
        writer.close()
        assert status_line.split()[1] == b"401", status_line
    finally:
        await client.close()


async def test_a_websocket_message_past_the_limit_closes_the_tunnel() -> None:
    """Why (issue 12): a 1 GiB WebSocket message through port-forward was buffered whole.
    The agent's hop now closes the tunnel with 1009 (message too big) past its limit."""
    import asyncio

    import aiohttp

    from agent.runtime import ContainerInfo

    received: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.append(data)
            writer.write(data)
        writer.close()

    backend = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = backend.sockets[0].getsockname()[1]

    class _OneContainer:
        async def inspect_container(self, name: str) -> ContainerInfo:
            return ContainerInfo("id", name, {"cara.project": "p", "cara.service": "web",
                                  "cara.node": "node-1"},
                                 "running", ips={"cara-p": "127.0.0.1"})

    api = AgentAPI(cast(Runtime, _OneContainer()), "node-1", "relay-secret",
                   ws_max_message_bytes=1024)
    client: TestClient[Any, Any] = TestClient(TestServer(api.app))
    await client.start_server()
    try:
        ws = await client.ws_connect(f"/api/v1/forward/p/web/{port}",
                                     headers={"Authorization": "Bearer relay-secret"})
        await ws.send_bytes(b"small")
        async with asyncio.timeout(10):
            msg = await ws.receive()
        assert msg.data == b"small"
        await ws.send_bytes(b"x" * 2048)
        async with asyncio.timeout(10):
            msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING)
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        assert b"x" * 2048 not in b"".join(received)
        await ws.close()
    finally:
        await client.close()
        backend.close()
