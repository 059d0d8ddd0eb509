"""The app's error handling without a database: a stub store (only for these unit tests)
that fails or hangs on purpose, so 500s, timeouts and unknown routes can be provoked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from caravanserai.server.access import ROUTE_ACCESS, Access
from caravanserai.server.app import create_app
from caravanserai.server.config import ServerConfig


class StubStore:
    """Just enough of the Store protocol for the routes these tests call."""

    def __init__(self) -> None:
        self.hang = asyncio.Event()

    async def get(self, kind: str, name: str) -> dict[str, Any]:
        if name == "boom":
            raise RuntimeError("secret internal detail")
        if name == "slow":
            await self.hang.wait()
        return {"apiVersion": "caravanserai/v1", "kind": kind, "metadata": {"name": name}}

    async def current_revision(self) -> int:
        raise OSError("connection refused")


async def slow_stream(request: web.Request) -> web.StreamResponse:
    """A streaming route (as the agents' log relay): starts at once, ends after 0.5 s."""
    response = web.StreamResponse()
    await response.prepare(request)
    await asyncio.sleep(0.5)
    await response.write(b"done\n")
    await response.write_eof()
    return response


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    config = ServerConfig(request_timeout=0.2, max_body_bytes=1024, insecure_allow_anonymous=True)
    # A route of its own needs an access rule like every other (here: open).
    rules = {**ROUTE_ACCESS, "testStream": Access("system", "get", None)}
    app = create_app(config, StubStore(), access=rules)  # type: ignore[arg-type]
    app.router.add_get("/test/stream", slow_stream, name="testStream")
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_unexpected_error_is_a_500_problem_without_details(client: TestClient) -> None:
    resp = await client.get("/api/v1/projects/boom")
    assert resp.status == 500
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["title"] == "Internal Server Error"
    assert "secret" not in await resp.text() and "Traceback" not in await resp.text()


async def test_slow_handler_times_out_as_503(client: TestClient) -> None:
    resp = await client.get("/api/v1/projects/slow")
    assert resp.status == 503
    assert "did not complete within 0.2s" in (await resp.json())["detail"]


async def test_streams_are_bounded_only_until_their_first_byte(client: TestClient) -> None:
    resp = await client.get("/test/stream")
    assert resp.status == 200
    assert await resp.read() == b"done\n"


async def test_readyz_reports_the_database(client: TestClient) -> None:
    resp = await client.get("/api/readyz")
    assert resp.status == 503
    assert (await resp.json())["detail"] == "database unreachable: connection refused"
    resp = await client.get("/api/healthz")
    assert resp.status == 200 and await resp.text() == "OK"


async def test_unknown_route_wrong_method_and_big_body(client: TestClient) -> None:
    resp = await client.get("/nowhere")
    assert resp.status == 404 and resp.content_type == "application/problem+json"
    resp = await client.put("/api/healthz")
    assert resp.status == 405 and resp.headers["Allow"] == "GET"
    resp = await client.post("/api/v1/projects", data=b"{" + b" " * 4096 + b"}",
                             headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["title"] == "Payload Too Large"


async def test_request_metrics_and_version(client: TestClient) -> None:
    await client.get("/api/v1/version")
    text = await (await client.get("/metrics")).text()
    assert 'cara_http_requests_total{method="GET",route="/api/v1/version",status="200"}' in text
