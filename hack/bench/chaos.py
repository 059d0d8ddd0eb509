"""The chaos suite, for as long as you like: ``hack/bench/chaos.py --minutes 20``.

Builds the HA cluster of ``tests/chaos/chaos_run.py`` (PostgreSQL primary + streaming
standby, PgBouncer in transaction mode, two cara-server replicas behind HAProxy, one agent
per Docker engine), runs the steady workload and watchers, injects the faults in shuffled
rounds (server SIGKILL, PostgreSQL primary kill + promotion, PgBouncer restart, agent
SIGKILL mid-reconcile, Docker engine restart, an agent cut off at the load balancer for
longer than the grace period) until the time is up, then runs the checker and prints the
table: faults, convergence after each, requests and failed requests by status, verdict.
Exit status 0 only when the checker passes.

Needs: the venv (``.venv/bin/python hack/bench/chaos.py``), pgbouncer and haproxy
(``hack/install-ha-tools.sh``), a first Docker engine at ``DOCKER_HOST`` and a second one
named by ``--second-engine`` (started with ``hack/docker-up.sh`` and given the test images
if needed; it is the engine the docker-restart fault restarts). Everything listens on
127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT

sys.path[:0] = [str(ROOT / "tests" / "chaos"), str(ROOT / "tests" / "e2e")]

from chaos_run import ChaosConfig, run  # noqa: E402
from ha_components import require_tool  # noqa: E402


def _fail(reason: str) -> None:
    raise SystemExit(f"chaos: {reason}")


def _engine(name: str) -> str:
    up = subprocess.run([str(ROOT / "hack" / "docker-up.sh"), name], capture_output=True,
                        text=True, check=False, timeout=300)
    if up.returncode != 0:
        _fail(f"hack/docker-up.sh {name} failed: {up.stderr.strip()[-500:]}")
    host = up.stdout.strip().rsplit("=", 1)[-1]
    build = subprocess.run([str(ROOT / "hack" / "build-images.sh")],
                           env=os.environ | {"DOCKER_HOST": host}, capture_output=True,
                           text=True, check=False, timeout=600)
    if build.returncode != 0:
        _fail(f"hack/build-images.sh on {host} failed: {build.stderr.strip()[-500:]}")
    return host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="run fault rounds until this many minutes have passed")
    parser.add_argument("--second-engine", default="chaos2",
                        help="hack/docker-up.sh NAME of the second node's engine")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    first = os.environ.get("DOCKER_HOST")
    if not first:
        _fail("set DOCKER_HOST to your Docker engine (eval \"$(hack/docker-up.sh NAME)\")")
    pgbouncer = require_tool("pgbouncer", _fail)  # type: ignore[arg-type]
    haproxy = require_tool("haproxy", _fail)  # type: ignore[arg-type]
    second = _engine(args.second_engine)
    workdir = Path(tempfile.mkdtemp(prefix="cara-chaos-"))
    workdir.chmod(0o755)
    try:
        report = asyncio.run(run(ChaosConfig(
            workdir=workdir, docker_hosts=[first, second], engine_names=["", args.second_engine],
            pgbouncer_bin=pgbouncer, haproxy_bin=haproxy, rounds=None, minutes=args.minutes,
            seed=args.seed,
        )))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.table())
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
