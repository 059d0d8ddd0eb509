"""The example controller (examples/controller/phase_labeler.py) against a real server:
as its own program over HTTP, and in-process on store-backed informers as the manager runs
plug-ins."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from test_client_support import (
    RunningServer,
    eventually,
    project_manifest,
    running_server,
)

from caravanserai.api import ProjectPhase
from caravanserai.client import CaravanseraiClient
from caravanserai.informer import ControllerContext, InformerFactory, run_controllers
from caravanserai.registry import Registries
from caravanserai.server.inprocess import InProcessClient
from caravanserai.store.postgres import PostgresStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "controller" / "phase_labeler.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("phase_labeler", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def server(store: PostgresStore) -> AsyncIterator[RunningServer]:
    async with running_server(store) as s:
        yield s


async def labels_follow_phases(client: CaravanseraiClient) -> None:
    await client.nodes.create({"metadata": {"name": "n1"}})
    for name in ("a", "b"):
        await client.projects.create(project_manifest(name))

    async def label(name: str) -> str | None:
        return (await client.projects.get(name)).metadata.labels.get("example.com/phase")

    await eventually(lambda: _all_equal(label, {"a": "Pending", "b": "Pending"}), within=15)
    await client.projects.patch_status("a", ProjectPhase.SCHEDULED, node_ref="n1")
    await client.projects.patch_status("a", ProjectPhase.RUNNING)
    await eventually(lambda: _all_equal(label, {"a": "Running", "b": "Pending"}), within=15)


async def _all_equal(label: object, expected: dict[str, str]) -> bool:
    for name, want in expected.items():
        if await label(name) != want:  # type: ignore[operator]
            return False
    return True


async def test_example_runs_as_its_own_program(server: RunningServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--server", server.url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        # Ctrl-C as from a terminal, whatever SIGINT disposition this test process has (a
        # background CI job inherits it ignored, and the example would keep ignoring it).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        async with CaravanseraiClient(server.url) as client:
            await labels_follow_phases(client)
        assert proc.returncode is None, "the controller keeps running"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0


async def test_example_runs_in_process_as_a_plugin(
    server: RunningServer, store: PostgresStore
) -> None:
    example = load_example()
    async with CaravanseraiClient(server.url) as client:
        ctx = ControllerContext(
            "phase-labeler",
            client,
            InformerFactory.over_client(InProcessClient(Registries(store))),
            config={"workers": 3},
        )
        ctrl = example.controller(ctx)
        runner = asyncio.create_task(run_controllers(ctx.informers, [ctrl]))
        try:
            await labels_follow_phases(client)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
