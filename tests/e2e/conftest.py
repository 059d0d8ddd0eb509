"""e2e fixtures (defined in agent_e2e_support.py): docker_host, docker, cara_server, api,
agents, agent. On failure the tail of every process log of the test is printed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_e2e_support import agent, agents, api, cara_server, docker, docker_host  # noqa: F401


@pytest.fixture(autouse=True)
def _show_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        tmp = request.node.funcargs.get("tmp_path")
        if tmp is not None:
            for path in sorted(Path(tmp).glob("*.log")):
                lines = path.read_text(errors="replace").splitlines()[-80:]
                print(f"\n----- {path.name} (last {len(lines)} lines)", file=sys.stderr)
                print("\n".join(lines), file=sys.stderr)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)
