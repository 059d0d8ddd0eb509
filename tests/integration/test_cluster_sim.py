"""The small cluster simulation (issue 13; 20 nodes, 100 projects, 2 servers, so it stays
within a minute or two on a busy CI machine): real servers, hollow nodes running the real agent
code over an in-memory runtime, a project workload; asserts correctness only (figures are
the benchmark's business: hack/bench/cluster.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from server_support import manifest, start_server_process, stop_server_process

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_every_project_runs_and_goes_and_no_event_is_lost(
    database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "hack" / "bench" / "cluster.py"), "--dsn", database_url,
         "--nodes", "20", "--projects", "100", "--servers", "2", "--rate", "50",
         "--timeout", "240", "--out", str(out)],
        capture_output=True, text=True, timeout=580,
    )
    assert (out / "cluster.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "cluster.json").read_text())
    assert report["created"] == 100 and report["all_running"], report
    assert report["deleted"] == 100 and report["all_deleted"], report
    assert report["events_lost"] == 0
    assert report["events_duplicated"] == 0
    assert report["watch_events"] > 0
    assert (out / "latency-cdf.svg").read_text().startswith("<svg")
    assert (out / "timeline.svg").read_text().startswith("<svg")
    assert proc.returncode == 0, proc.stdout[-3000:]


def _start_fake_agent(server_url: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARA_", "AGENT_"))}
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("cara-agent")), "--runtime", "fake",
         "--server-url", server_url, "--node-name", "hollow-one",
         "--heartbeat-interval", "1s", "--agent-host", "127.0.0.1", "--agent-port", "0",
         "--proxy-listen-addr", "127.0.0.1:0", "--advertise-ip", "127.0.0.1",
         "--fake-start-latency", "0.1"],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def test_cara_agent_with_the_fake_runtime_runs_projects(
    database_url: str, tmp_path: Path
) -> None:
    """The ``cara-agent --runtime=fake`` program itself: it registers, gets a project
    scheduled to it, reports it Running and, when deleted, Terminated (then it is gone)."""
    server = start_server_process(
        {"DATABASE_URL": database_url, "CARA_BOOKMARK_INTERVAL": "1"}, cwd=tmp_path
    )
    agent = _start_fake_agent(server.url, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            async def phase(name: str) -> str | None:
                async with http.get(f"{server.url}/api/v1/projects/{name}") as r:
                    if r.status == 404:
                        return None
                    return ((await r.json()).get("status") or {}).get("phase")

            async def until(cond: Callable[[], Awaitable[bool]], what: str) -> None:
                async with asyncio.timeout(60):
                    while True:
                        if await cond():
                            return
                        await asyncio.sleep(0.2)

            async with http.post(f"{server.url}/api/v1/projects",
                                 json=manifest("on-hollow")) as r:
                assert r.status == 201, await r.text()

            async def running() -> bool:
                return await phase("on-hollow") == "Running"

            await until(running, "Running")
            async with http.get(f"{server.url}/api/v1/projects/on-hollow") as r:
                assert (await r.json())["status"]["nodeRef"] == "hollow-one"
            async with http.delete(f"{server.url}/api/v1/projects/on-hollow") as r:
                assert r.status in (200, 202, 204)

            async def gone() -> bool:
                return await phase("on-hollow") is None

            await until(gone, "deleted")
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            assert agent.wait(timeout=20) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
            stop_server_process(server)
