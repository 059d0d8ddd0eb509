"""The chaos suite: a whole HA cluster (PostgreSQL primary + standby, PgBouncer, two
cara-server replicas behind HAProxy, two agents on their own Docker engines) under a steady
workload, one round of every fault, then the checker (see ``chaos_run.py``).

The same run, longer: ``hack/bench/chaos.py --minutes N``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from chaos_run import FAULTS, ChaosConfig, run
from cluster_e2e_support import second_engine

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

# The second engine is shared with the multi-node e2e tests of the session (same NAME); it
# is the one the docker-restart fault restarts, never the session's first engine, which may
# host the suite's PostgreSQL container.
SECOND_ENGINE = os.environ.get("CARA_E2E_SECOND_ENGINE", "node2")


@pytest.fixture(scope="session")
def second_docker_host(docker_host: str, skip_or_fail: Callable[[str], NoReturn]) -> Iterator[str]:
    yield from second_engine(SECOND_ENGINE, docker_host, skip_or_fail)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Reachable by the unprivileged PostgreSQL/PgBouncer user (pytest's tmp_path is not)."""
    path = Path(tempfile.mkdtemp(prefix="cara-chaos-"))
    path.chmod(0o755)
    yield path
    if os.environ.get("CARA_CHAOS_KEEP"):
        print(f"chaos work directory (logs) kept: {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


async def test_chaos_round_loses_nothing(
    docker_host: str, second_docker_host: str, pgbouncer_bin: str, haproxy_bin: str,
    workdir: Path,
) -> None:
    report = await run(ChaosConfig(
        workdir=workdir,
        docker_hosts=[docker_host, second_docker_host],
        engine_names=["", SECOND_ENGINE],
        pgbouncer_bin=pgbouncer_bin,
        haproxy_bin=haproxy_bin,
        rounds=1,
        # A subset while debugging one fault, e.g. CARA_CHAOS_FAULTS=net-cut,server-kill.
        faults=tuple(os.environ.get("CARA_CHAOS_FAULTS", ",".join(FAULTS)).split(",")),
    ))
    print(report.table())
    assert len(report.faults) == len(FAULTS) or "CARA_CHAOS_FAULTS" in os.environ
    assert report.ok, report.table()
