"""The ingress proxy: route table, Host header routing, X-Forwarded-*, 502s, re-resolution."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.proxy import IngressProxy, Route, RouteTable, routes_for
from caravanserai.api import Project


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def route(host: str, project: str = "p", service: str = "web", port: int = 80) -> Route:
    return Route(host=host, project=project, service=service, port=port, ingress="i")


def test_routes_for_resolves_hosts() -> None:
    p = Project.model_validate({
        "metadata": {"name": "wordpress"},
        "spec": {
            "services": [{"name": "app", "image": "x"}],
            "ingress": [
                {"name": "web", "host": "blog.example.com",
                 "target": {"service": "app", "port": 80}},
                {"name": "admin", "host": "admin", "target": {"service": "app", "port": 8080}},
            ],
        },
    })
    got = {(r.host, r.service, r.port) for r in routes_for(p, "dev", "cara.local")}
    assert got == {("blog.example.com", "app", 80), ("admin.dev.cara.local", "app", 8080)}


def test_route_table_ownership() -> None:
    table = RouteTable()
    table.set_project("a", [route("x.test", "a")], {"web": "10.0.0.2"})
    table.set_project("b", [route("x.test", "b"), route("y.test", "b")], {"web": "10.0.0.3"})
    assert table.lookup("x.test:8081").project == "a"  # first claimant keeps it
    assert table.lookup("Y.TEST").project == "b"
    table.remove_project("b")  # removes only its own hosts
    assert table.lookup("x.test") is not None
    assert table.lookup("y.test") is None
    assert table.ip("a", "web") == "10.0.0.2"
    table.remove_project("a")
    assert table.hosts() == {} and table.ip("a", "web") is None


@pytest.fixture
async def upstream() -> AsyncIterator[TestServer]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({
            "path": request.path_qs,
            "method": request.method,
            "body": (await request.read()).decode(),
            "headers": dict(request.headers),
        })

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[RouteTable, dict[str, str | None], TestServer]]:
    table = RouteTable()
    resolved: dict[str, str | None] = {}

    async def resolver(project: str, service: str) -> str | None:
        return resolved.get(f"{project}/{service}")

    ingress = IngressProxy(table, resolver, connect_timeout=2)
    server = TestServer(ingress.app, host="127.0.0.1")
    await server.start_server()
    yield table, resolved, server
    await server.close()


async def test_routes_by_host_with_forwarded_headers(upstream: TestServer, proxy: tuple) -> None:
    table, _, server = proxy
    table.set_project(
        "p", [route("admin.dev.cara.local", port=upstream.port)], {"web": "127.0.0.1"}
    )
    async with aiohttp.ClientSession() as s, s.post(
        server.make_url("/a/b?x=1"), data="hello",
        headers={"Host": "admin.dev.cara.local:8081", "X-Forwarded-For": "1.2.3.4"},
    ) as resp:
        assert resp.status == 200
        got = await resp.json()
    assert got["path"] == "/a/b?x=1"
    assert got["method"] == "POST" and got["body"] == "hello"
    headers = got["headers"]
    assert headers["Host"] == "admin.dev.cara.local:8081"  # the inbound Host is kept
    # The client's own X-Forwarded-For is not trusted: the backend sees the real peer.
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Host"] == "admin.dev.cara.local:8081"
    assert headers["X-Forwarded-Proto"] == "http"


async def _through(upstream: TestServer, *, trust: bool, **headers: str) -> dict[str, str]:
    table = RouteTable()
    table.set_project("p", [route("a.test", port=upstream.port)], {"web": "127.0.0.1"})

    async def resolver(project: str, service: str) -> str | None:
        return None

    server = TestServer(IngressProxy(table, resolver, trust_forwarded=trust).app,
                        host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s, s.get(
            server.make_url("/"), headers={"Host": "a.test", **headers}
        ) as resp:
            assert resp.status == 200
            return dict((await resp.json())["headers"])
    finally:
        await server.close()


async def test_client_forwarding_headers_are_ignored_unless_trusted(
    upstream: TestServer,
) -> None:
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "bank.example",
             "X-Forwarded-Proto": "https", "Forwarded": "for=6.6.6.6"}
    got = await _through(upstream, trust=False, **spoof)
    assert got["X-Forwarded-For"] == "127.0.0.1"
    assert got["X-Forwarded-Host"] == "a.test"
    assert got["X-Forwarded-Proto"] == "http"
    assert "Forwarded" not in got
    got = await _through(upstream, trust=True, **spoof)
    assert got["X-Forwarded-For"] == "6.6.6.6, 127.0.0.1"
    assert got["X-Forwarded-Host"] == "bank.example"
    assert got["X-Forwarded-Proto"] == "https"


@pytest.fixture
async def small_proxy(
    upstream: TestServer,
) -> AsyncIterator[TestServer]:
    table = RouteTable()
    table.set_project("p", [route("up.test", port=upstream.port)], {"web": "127.0.0.1"})

    async def resolver(project: str, service: str) -> str | None:
        return None

    server = TestServer(IngressProxy(table, resolver, max_body_bytes=1000).app,
                        host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_a_body_past_the_limit_is_a_413(small_proxy: TestServer) -> None:
    async def chunked(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"x" * 100

    async with aiohttp.ClientSession() as s:
        # Declared too large: refused before anything is read or sent.
        async with s.post(small_proxy.make_url("/"), data=b"x" * 1001,
                          headers={"Host": "up.test"}) as resp:
            assert resp.status == 413
            assert resp.content_type == "application/problem+json"
        # Chunked (no Content-Length): refused when the limit is crossed.
        async with s.post(small_proxy.make_url("/"), data=chunked(50),
                          headers={"Host": "up.test"}) as resp:
            assert resp.status == 413
        # Within the limit, streamed through whole.
        async with s.post(small_proxy.make_url("/"), data=chunked(10),
                          headers={"Host": "up.test"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["body"] == "x" * 1000


async def fetch(server: TestServer, host: str, **headers: str) -> tuple[int, str, str]:
    """GET / through the proxy with this Host: (status, content type, body)."""
    async with aiohttp.ClientSession() as s, s.get(
        server.make_url("/"), headers={"Host": host, **headers}
    ) as resp:
        return resp.status, resp.content_type, await resp.text()


async def test_unknown_host_is_a_502_problem(proxy: tuple) -> None:
    _, _, server = proxy
    status, ctype, text = await fetch(server, "nope.test")
    assert (status, ctype) == (502, "application/problem+json")
    body = json.loads(text)
    assert body["status"] == 502 and "nope.test" in body["detail"]
    status, ctype, text = await fetch(server, "nope.test", Accept="text/html")
    assert (status, ctype) == (502, "text/html")
    assert "502 Bad Gateway" in text


async def test_dead_backend_is_a_502(proxy: tuple) -> None:
    table, _, server = proxy
    table.set_project("p", [route("dead.test", port=free_port())], {"web": "127.0.0.1"})
    status, _, text = await fetch(server, "dead.test")
    assert status == 502 and "unreachable" in json.loads(text)["detail"]


async def test_stale_ip_is_re_resolved(upstream: TestServer, proxy: tuple) -> None:
    table, resolved, server = proxy
    # The container restarted: the table's IP is stale (nothing listens on 127.0.0.2:port).
    table.set_project("p", [route("moved.test", port=upstream.port)], {"web": "127.0.0.2"})
    resolved["p/web"] = "127.0.0.1"
    status, _, _ = await fetch(server, "moved.test")
    assert status == 200
    assert table.ip("p", "web") == "127.0.0.1"


async def test_removed_project_has_no_route(upstream: TestServer, proxy: tuple) -> None:
    table, _, server = proxy
    table.set_project("p", [route("gone.test", port=upstream.port)], {"web": "127.0.0.1"})
    assert (await fetch(server, "gone.test"))[0] == 200
    table.remove_project("p")
    assert (await fetch(server, "gone.test"))[0] == 502


async def test_bodies_are_streamed_not_held_whole() -> None:
    """Why (issue 12): a 1.5 GiB POST made the proxy hold 2.2 GB. The backend now gets the
    first chunk while the client still holds back the rest, and the client reads the first
    bytes of the answer while the backend still holds back the rest."""
    first_in = asyncio.Event()
    release_upload = asyncio.Event()
    release_download = asyncio.Event()

    async def backend(request: web.Request) -> web.StreamResponse:
        received = 0
        async for chunk in request.content.iter_any():
            received += len(chunk)
            first_in.set()
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(f"got {received};".encode())
        await release_download.wait()
        await resp.write(b"end")
        return resp

    app = web.Application()
    app.router.add_post("/", backend)
    up = TestServer(app, host="127.0.0.1")
    await up.start_server()
    table = RouteTable()
    table.set_project("p", [route("s.test", port=up.port)], {"web": "127.0.0.1"})

    async def resolver(project: str, service: str) -> str | None:
        return None

    proxy_server = TestServer(IngressProxy(table, resolver).app, host="127.0.0.1")
    await proxy_server.start_server()

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        await release_upload.wait()  # not sent until the backend has the first chunk
        yield b"b" * 1000

    try:
        async with aiohttp.ClientSession() as s:
            request = asyncio.ensure_future(
                s.post(proxy_server.make_url("/"), data=body(), headers={"Host": "s.test"})
            )
            async with asyncio.timeout(10):
                await first_in.wait()
            release_upload.set()
            async with asyncio.timeout(10):
                resp = await request
                assert await resp.content.readuntil(b";") == b"got 2000;"
            release_download.set()
            assert await resp.read() == b"end"
            resp.release()
    finally:
        await proxy_server.close()
        await up.close()
