"""``cara-server --workers 2``: two processes on one port, one API, metrics summed across
workers, one controller manager, a graceful shutdown of the group."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
from server_support import manifest, start_server_process, stop_server_process


async def test_two_workers_share_the_port_the_metrics_and_shut_down_together(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server_process(
        # DEBUG: the request lines (which name the worker) are debug-level.
        {"DATABASE_URL": database_url, "CARA_BOOKMARK_INTERVAL": "1", "DEBUG": "true"},
        cwd=tmp_path, args=["--workers", "2"],
    )
    try:
        # New connections each time, so the kernel spreads them over the workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.post(f"{server.url}/api/v1/projects", json=manifest("w1")) as r:
                assert r.status == 201, await r.text()
            for _ in range(24):
                async with s.get(f"{server.url}/api/v1/projects/w1") as r:
                    assert r.status == 200
            # A watch on whichever worker sees a create made through any worker.
            watches = [await s.get(f"{server.url}/api/v1/projects",
                                   params={"watch": "true", "resourceVersion": "1"},
                                   timeout=aiohttp.ClientTimeout(total=30))
                       for _ in range(4)]
            async with s.post(f"{server.url}/api/v1/projects", json=manifest("w2")) as r:
                assert r.status == 201
            for w in watches:
                # w1 may be modified meanwhile (the scheduler marks it Unschedulable: there
                # is no node); what matters is that w2's creation arrives on every worker.
                async with asyncio.timeout(20):
                    while True:
                        event = json.loads(await w.content.readline())
                        if event["object"]["metadata"]["name"] == "w2":
                            assert event["type"] == "ADDED"
                            break
            # /metrics from any worker counts every worker's open watches and requests.
            for _ in range(4):
                async with s.get(f"{server.url}/metrics") as r:
                    text = await r.text()
                opened = re.search(r'^cara_watches_open\{kind="Project"\} (\S+)$', text, re.M)
                assert opened is not None and float(opened.group(1)) == 4.0, text[:2000]
                gets = sum(float(m.group(1)) for m in re.finditer(
                    r'^cara_http_requests_total\{method="GET",route="/api/v1/projects/\{name\}"'
                    r',status="200"\} (\S+)$', text, re.M))
                assert gets == 24.0
            for w in watches:
                w.close()
    finally:
        code = stop_server_process(server, timeout=30)
    log = "".join(server.lines)
    assert code == 0, log[-3000:]
    workers = {json.loads(line).get("worker") for line in server.lines
               if line.startswith("{") and '"request"' in line}
    assert workers == {0, 1}, "both workers served requests"
    assert '"shutdown.complete"' in log
