"""Connection limits (issue 12, item 2): slow headers, idle keep-alive, too many connections,
rate-limited accept errors. A real aiohttp server on loopback with tiny limits; each test
waits for the server to act (EOF or a status line), never for a fixed time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from caravanserai.connections import ConnectionLimits, LimitedAppRunner, RateLimitedLog

WITHIN = 10.0  # generous bound on the server acting; the limits themselves are 0.2 s


async def ok(_request: web.Request) -> web.Response:
    return web.Response(text="OK")


@contextlib.asynccontextmanager
async def serve(limits: ConnectionLimits) -> AsyncIterator[tuple[str, int]]:
    app = web.Application()
    app.router.add_get("/", ok)
    runner = LimitedAppRunner(app, limits=limits, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield host, port
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    async with serve(ConnectionLimits(header_timeout=0.2, idle_timeout=0.2)) as address:
        yield address


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(WITHIN):
        return await reader.read()


async def test_a_slow_header_connection_is_closed(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
    await writer.drain()
    assert await _closed_by_server(reader) == b""
    writer.close()


async def test_a_silent_connection_is_closed(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    assert await _closed_by_server(reader) == b""
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    data = await _closed_by_server(reader)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"OK")
    writer.close()


async def test_past_max_connections_a_new_one_gets_503() -> None:
    limits = ConnectionLimits(header_timeout=60, idle_timeout=60, max_connections=3)
    async with serve(limits) as server:
        held = [await asyncio.open_connection(*server) for _ in range(3)]
        # Served ones still work: each is counted before the next is accepted.
        reader, writer = held[0]
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(WITHIN):
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        reader, writer = await asyncio.open_connection(*server)
        data = await _closed_by_server(reader)
        assert data.startswith(b"HTTP/1.1 503"), data
        assert b"too many open connections" in data
        writer.close()
        for _, w in held:
            w.close()


def test_rate_limited_log_counts_what_it_holds_back() -> None:
    limited = RateLimitedLog(interval=10)
    assert limited("e", 0.0)
    assert not limited("e", 1.0)
    assert not limited("e", 9.9)
    assert limited("other", 9.9)
    assert limited("e", 10.0)
    assert limited._suppressed == {}
