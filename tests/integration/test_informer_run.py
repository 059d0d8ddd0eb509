"""``python -m caravanserai.informer.run`` as a subprocess against a real server: the label
syncer example keeps its label, /healthz and /metrics answer, SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from test_client_support import (
    RunningServer,
    eventually,
    free_port,
    node_manifest,
    project_manifest,
    running_server,
)

from caravanserai.api import ProjectPhase
from caravanserai.client import CaravanseraiClient
from caravanserai.informer import ControllerContext, InformerFactory, run_controllers
from caravanserai.informer.run import FactoryError, load_factory
from caravanserai.registry import Registries
from caravanserai.server.inprocess import InProcessClient
from caravanserai.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[2]
SYNCER = f"{ROOT / 'examples' / 'controller' / 'label_syncer.py'}:controller"
LABEL = "example.com/node"


@pytest.fixture
async def server(store: PostgresStore) -> AsyncIterator[RunningServer]:
    async with running_server(store) as s:
        yield s


async def label_follows_node(client: CaravanseraiClient) -> None:
    """The syncer's behaviour: the label appears when the project lands on a node, follows
    it when it moves, and an edit of the label by hand is put right."""
    for n in ("n1", "n2"):
        await client.nodes.create(node_manifest(n))
    await client.projects.create(project_manifest("web"))

    async def label() -> str | None:
        return (await client.projects.get("web")).metadata.labels.get(LABEL)

    await client.projects.patch_status("web", ProjectPhase.SCHEDULED, node_ref="n1")
    await eventually(lambda: _is(label, "n1"), within=15)
    await client.projects.patch_status("web", ProjectPhase.PENDING, "NodeDrained", "moved")
    await eventually(lambda: _is(label, None), within=15)
    await client.projects.patch_status("web", ProjectPhase.SCHEDULED, node_ref="n2")
    await eventually(lambda: _is(label, "n2"), within=15)
    await client.projects.patch("web", {"metadata": {"labels": {LABEL: "wrong"}}})
    await eventually(lambda: _is(label, "n2"), within=15)


async def _is(get: object, want: str | None) -> bool:
    return await get() == want  # type: ignore[operator, no-any-return]


async def test_runner_runs_the_example_and_stops_cleanly_on_sigterm(
    server: RunningServer,
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "caravanserai.informer.run", SYNCER,
        "--server", server.url, "--workers", "3", "--health-port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with CaravanseraiClient(server.url) as client:
            await label_follows_node(client)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                metrics = await resp.text()
        assert 'caravanserai_controller_reconcile_total{controller="label-syncer"' in metrics
        assert proc.returncode is None, "the controller keeps running"
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert out == b"", "nothing on stdout: logs go to stderr"
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "controller started" in names
    assert any(e["event"] == "shutting down" and e["signal"] == "SIGTERM" for e in events)
    assert names[-1] == "stopped"
    # Watch events are debug lines: off at the default level.
    assert not any(e.get("level") == "debug" for e in events)


async def test_runner_rejects_a_bad_factory_in_one_line() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "caravanserai.informer.run", "no_such_module:controller",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "cannot import no_such_module" in err.decode()
    assert "Traceback" not in err.decode()
    for ref in ("nocolon", "json:nope", f"{ROOT}/missing.py:controller"):
        with pytest.raises(FactoryError):
            load_factory(ref)


async def test_the_example_runs_in_process_as_a_plugin(
    server: RunningServer, store: PostgresStore
) -> None:
    _, factory = load_factory(SYNCER)
    async with CaravanseraiClient(server.url) as client:
        ctx = ControllerContext(
            "label-syncer", client, InformerFactory.over_client(InProcessClient(Registries(store)))
        )
        runner = asyncio.create_task(run_controllers(ctx.informers, [factory(ctx)]))
        try:
            await label_follows_node(client)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


async def _until_line(proc: asyncio.subprocess.Process, event: str, within: float) -> None:
    assert proc.stderr is not None
    async with asyncio.timeout(within):
        while True:
            line = await proc.stderr.readline()
            assert line, f"the runner exited ({await proc.wait()}) before logging {event!r}"
            if line.startswith(b"{") and json.loads(line).get("event") == event:
                return


async def test_leader_election_runs_one_copy_and_hands_over(server: RunningServer) -> None:
    """Two copies with --leader-elect: one leads; SIGTERM releases the lease and the other
    takes over and keeps the label in line."""

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "caravanserai.informer.run", SYNCER, "--server", server.url,
            "--leader-elect",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    first = await start()
    second: asyncio.subprocess.Process | None = None
    try:
        await _until_line(first, "controllers starting", within=30)
        second = await start()
        waiting = asyncio.create_task(_until_line(second, "controllers starting", within=60))
        async with CaravanseraiClient(server.url) as client:
            await client.nodes.create(node_manifest("n1"))
            await client.projects.create(project_manifest("web"))
            await client.projects.patch_status("web", ProjectPhase.SCHEDULED, node_ref="n1")

            async def label() -> str | None:
                return (await client.projects.get("web")).metadata.labels.get(LABEL)

            await eventually(lambda: _is(label, "n1"), within=15)
            assert not waiting.done(), "the second copy must wait while the first leads"
            first.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(first.wait(), 20) == 0
            await waiting  # the lease was released: the second copy leads now
            await client.projects.patch("web", {"metadata": {"labels": {LABEL: "wrong"}}})
            await eventually(lambda: _is(label, "n1"), within=15)
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()


TABLE = f"{ROOT / 'examples' / 'controller' / 'node_table.py'}:controller"


async def test_two_examples_share_one_runner_and_the_table_follows_moves(
    server: RunningServer,
) -> None:
    """The label syncer and the node table in one process (one informer per kind); a project
    moving from n1 to n2 changes both nodes' counts."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "caravanserai.informer.run", SYNCER, TABLE, "--server", server.url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with CaravanseraiClient(server.url) as client:

            async def counts() -> dict[str, str | None]:
                nodes = (await client.nodes.list()).items
                return {n.metadata.name: n.metadata.annotations.get(KEY) for n in nodes}

            async def counts_are(want: dict[str, str | None]) -> bool:
                return await counts() == want

            await client.nodes.create(node_manifest("n1"))
            await client.nodes.create(node_manifest("n2"))
            await eventually(lambda: counts_are({"n1": "0", "n2": "0"}), within=15)
            for name in ("a", "b"):
                await client.projects.create(project_manifest(name))
                await client.projects.patch_status(name, ProjectPhase.SCHEDULED, node_ref="n1")
            await eventually(lambda: counts_are({"n1": "2", "n2": "0"}), within=15)
            await client.projects.patch_status("a", ProjectPhase.PENDING, "NodeDrained", "moved")
            await client.projects.patch_status("a", ProjectPhase.SCHEDULED, node_ref="n2")
            await eventually(lambda: counts_are({"n1": "1", "n2": "1"}), within=15)
            # ... and the syncer, in the same process, labelled the moved project.
            await eventually(lambda: _is(lambda: _label(client, "a"), "n2"), within=15)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0


KEY = "example.com/projects"


async def _label(client: CaravanseraiClient, name: str) -> str | None:
    return (await client.projects.get(name)).metadata.labels.get(LABEL)
