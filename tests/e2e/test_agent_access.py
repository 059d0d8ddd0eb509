"""e2e: reaching workloads — logs and port-forward through the server (caractrl needs only
the server's address), and the agent's ingress proxy by Host header."""

from __future__ import annotations

import re

import aiodocker
import aiohttp
import pytest
from agent_e2e_support import (
    BUSYBOX,
    WEB,
    WEB_TEXT,
    AgentHandle,
    apply,
    manifest,
    unique,
    wait_gone,
    wait_phase,
    wait_until,
)

from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker

TALKER = (
    "trap 'exit 0' TERM; echo start; echo to-stderr >&2; i=0; "
    "while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done"
)
# busybox httpd with a CGI that prints its environment (HTTP_* = the request headers).
ECHO_HTTPD = (
    "mkdir -p /w/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nenv\\n'"
    " > /w/cgi-bin/env && chmod +x /w/cgi-bin/env && echo hello-from-echo > /w/index.html"
    " && trap 'exit 0' TERM; httpd -f -p 80 -h /w & wait $!"
)


async def _get(api: CaravanseraiClient, path: str, **params: str) -> tuple[int, str]:
    session = api._get_session()
    async with session.get(api.url(path), params=params,
                           timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.text()


async def test_logs_through_the_server(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("logs")
    await apply(api, agent.node, manifest(name, [
        {"name": "talker", "image": BUSYBOX, "command": ["sh", "-c", TALKER]},
        {"name": "quiet", "image": BUSYBOX},
    ]))
    await wait_phase(api, name, "Running")
    path = f"/api/v1/projects/{name}/logs"

    async def some_ticks() -> str | None:
        status, text = await _get(api, path, service="talker")
        return text if status == 200 and "tick-3" in text else None

    text = await wait_until(some_ticks, within=15, what="log lines")
    lines = text.splitlines()
    # stdout and stderr, demultiplexed (no frame headers); their relative order is Docker's.
    assert "start" in lines and "to-stderr" in lines
    assert "\x01\x00\x00\x00" not in text and "\x02\x00\x00\x00" not in text

    status, tail = await _get(api, path, service="talker", tail="2")
    assert status == 200
    assert len(tail.splitlines()) == 2 and all(x.startswith("tick-") for x in tail.splitlines())

    status, stamped = await _get(api, path, service="talker", tail="1", timestamps="true")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z tick-\d+$", stamped.strip())

    # follow: lines written after the request arrive on the open stream.
    last_seen = max(int(x.split("-")[1]) for x in text.splitlines() if x.startswith("tick-"))
    session = api._get_session()
    async with session.get(api.url(path), params={"service": "talker", "follow": "true",
                                                  "tail": "0"},
                           timeout=aiohttp.ClientTimeout(total=15)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        newer = 0
        while newer <= last_seen + 5:
            line = (await resp.content.readline()).decode().strip()
            assert line, "follow stream ended"
            newer = int(line.split("-")[1])

    # Problems for what cannot be served.
    status, body = await _get(api, path)
    # Two services: which one? (409: the answer depends on the stored project, not the request)
    assert status == 409 and "service" in body
    status, _ = await _get(api, path, service="nope")
    assert status == 404
    status, _ = await _get(api, "/api/v1/projects/no-such-project/logs", service="x")
    assert status == 404
    status, _ = await _get(api, path, service="talker", tail="lots")
    assert status == 400
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_port_forward_through_the_server(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("fwd")
    await apply(api, agent.node, manifest(name, [{"name": "web", "image": WEB}]))
    await wait_phase(api, name, "Running")
    url = api.url(f"/api/v1/projects/{name}/portforward")
    session = api._get_session()
    for _ in range(2):  # one WebSocket per TCP connection; several in a row work
        async with session.ws_connect(url, params={"service": "web", "port": "80"},
                                      timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
            await ws.send_bytes(b"GET / HTTP/1.0\r\nHost: tunnel\r\n\r\n")
            received = b""
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                received += msg.data
        assert received.startswith(b"HTTP/1.") and b" 200 " in received.split(b"\r\n")[0]
        assert WEB_TEXT.encode() in received

    status, _ = await _get(api, f"/api/v1/projects/{name}/portforward", service="web",
                           port="0")
    assert status == 400
    status, _ = await _get(api, f"/api/v1/projects/{name}/portforward", service="web",
                           port="80")
    assert status == 400  # not a WebSocket upgrade
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(url, params={"service": "nope", "port": "80"})
    assert refused.value.status == 404
    # Nothing listens on 81: the agent answers 502 before upgrading.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(url, params={"service": "web", "port": "81"})
    assert refused.value.status == 502
    await api.projects.delete(name)
    await wait_gone(api, docker, name)


async def test_ingress_proxy_by_host(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("ingress")
    await apply(api, agent.node, manifest(
        name,
        [{"name": "web", "image": BUSYBOX, "command": ["sh", "-c", ECHO_HTTPD]}],
        ingress=[
            {"name": "short", "host": name, "target": {"service": "web", "port": 80}},
            {"name": "full", "host": f"{name}.example.com",
             "target": {"service": "web", "port": 80}},
        ],
    ))
    await wait_phase(api, name, "Running")
    short_host = f"{name}.dev.cara.local"  # {host}.{environment}.{baseDomain}

    async def fetch(host: str, path: str = "/") -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(
            agent.proxy_url + path, headers={"Host": host, "X-Forwarded-For": "203.0.113.7"},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as resp:
            return resp.status, await resp.text()

    async def serving(host: str) -> bool:
        status, text = await fetch(host)
        return status == 200 and "hello-from-echo" in text

    await wait_until(lambda: serving(short_host), within=10, what="the short host served")
    assert await serving(f"{name}.example.com")  # a host with a dot: verbatim
    assert await serving(f"{short_host.upper()}:8081")  # case and port do not matter

    status, env = await fetch(short_host, "/cgi-bin/env")
    assert status == 200
    assert f"HTTP_HOST={short_host}" in env  # the original Host reaches the backend
    # The client's own X-Forwarded-For is not trusted (CARA_PROXY_TRUST_FORWARDED is off).
    assert "HTTP_X_FORWARDED_FOR=127.0.0.1\n" in env
    assert "203.0.113.7" not in env
    assert f"HTTP_X_FORWARDED_HOST={short_host}" in env
    assert "HTTP_X_FORWARDED_PROTO=http" in env

    status, text = await fetch("unknown.dev.cara.local")
    assert status == 502 and "unknown.dev.cara.local" in text

    # Routes follow the container: restarted (possibly with another address), still served.
    [container] = await docker.containers.list(filters={"label": [f"cara.project={name}"]})
    await container.restart(timeout=2)
    await wait_until(lambda: serving(short_host), within=15, what="served after a restart")

    # ... and go with the project.
    await api.projects.delete(name)
    await wait_gone(api, docker, name)
    status, _ = await fetch(short_host)
    assert status == 502
