"""The relay to an agent whose API serves HTTPS (``cara-agent --tls-cert-file``): the server
trusts the agents' CA (``CARA_AGENT_CA``) and tunnels a port-forward through; a server that
does not know the CA, or speaks HTTP to it, never gets through (502). A throw-away CA from
``trustme``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from server_support import make_config, manifest, node_manifest

from agent.agent_api import AgentAPI
from agent.runtime import ContainerInfo, Runtime
from caravanserai.server.app import create_app
from caravanserai.server.authn import Role, digest, new_token
from caravanserai.store.postgres import PostgresStore
from caravanserai.store.tokens import TokenStore
from caravanserai.tls import server_context

SECRET = "cara_relay-secret-of-n1"


class _OneContainer:
    async def inspect_container(self, name: str) -> ContainerInfo:
        return ContainerInfo("id", name, {"cara.project": "p", "cara.service": "web",
                                          "cara.node": "n1"},
                             "running", ips={"cara-p": "127.0.0.1"})


@pytest.fixture
async def tls_agent(tmp_path: Path) -> AsyncIterator[tuple[int, Path, Path]]:
    """An agent API on 127.0.0.1 over HTTPS; yields (port, its CA file, another CA file)."""
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {name: tmp_path / name for name in ("ca.pem", "other.pem", "cert.pem", "key.pem")}
    ca.cert_pem.write_to_path(str(files["ca.pem"]))
    other.cert_pem.write_to_path(str(files["other.pem"]))
    cert.private_key_pem.write_to_path(str(files["key.pem"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert.pem"]))
    api = AgentAPI(cast(Runtime, _OneContainer()), "n1", SECRET)
    runner = web.AppRunner(api.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0,
                       ssl_context=server_context(str(files["cert.pem"]), str(files["key.pem"])))
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, files["ca.pem"], files["other.pem"]
    finally:
        await runner.cleanup()


async def _echo_port() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    backend = await asyncio.start_server(echo, "127.0.0.1", 0)
    return backend, backend.sockets[0].getsockname()[1]


async def _forward_through(
    store: PostgresStore, database_url: str, agent_port: int, **config: Any
) -> bytes | int:
    """Port-forward through a server with ``config`` to the TLS agent: the echo, or the
    status the server answered instead."""
    server = TestServer(create_app(make_config(database_url, **config), store),
                        host="127.0.0.1")
    await server.start_server()
    backend, echo_port = await _echo_port()
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{server.port}"
            tokens = TokenStore(store)
            await tokens.replace("node:n1", Role.NODE.value, digest(new_token()), node="n1",
                                 agent_secret=SECRET)
            for method, path, body in (
                ("POST", "/api/v1/nodes", node_manifest("n1")),
                ("POST", "/api/v1/nodes/n1/heartbeat",
                 {"state": "Ready", "network": {"ip": "127.0.0.1", "agentPort": agent_port}}),
                ("POST", "/api/v1/projects", manifest("p")),
                ("PATCH", "/api/v1/projects/p/status", {"phase": "Scheduled", "nodeRef": "n1"}),
            ):
                async with http.request(method, base + path, json=body) as resp:
                    assert resp.status < 300 or resp.status == 409, await resp.text()
            url = f"{base}/api/v1/projects/p/portforward?service=web&port={echo_port}"
            try:
                async with http.ws_connect(url) as ws:
                    await ws.send_bytes(b"over tls")
                    async with asyncio.timeout(10):
                        msg = await ws.receive()
                    return cast(bytes, msg.data)
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
    finally:
        backend.close()
        await server.close()


async def test_the_relay_reaches_an_https_agent_it_trusts(
    store: PostgresStore, database_url: str, tls_agent: tuple[int, Path, Path]
) -> None:
    port, ca, _ = tls_agent
    assert await _forward_through(store, database_url, port, agent_ca=str(ca)) == b"over tls"


@pytest.mark.parametrize("trust", ["another CA", "plain HTTP"])
async def test_the_relay_never_gets_through_without_the_agents_ca(
    store: PostgresStore, database_url: str, tls_agent: tuple[int, Path, Path], trust: str
) -> None:
    port, _, other = tls_agent
    config = {"agent_ca": str(other)} if trust == "another CA" else {}
    assert await _forward_through(store, database_url, port, **config) == 502
