#!/usr/bin/env python
"""Benchmark the scheduler: how long 10,000 Pending projects take to be Scheduled across
1,000 Ready nodes, and how evenly they spread.

    .venv/bin/python hack/bench/schedule.py                  # embedded PostgreSQL
    .venv/bin/python hack/bench/schedule.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python hack/bench/schedule.py --projects 2000 --nodes 200 --floor 2000
    .venv/bin/python hack/bench/schedule.py --requests     # resource-aware path

With ``--requests`` every project requests 0.1 CPU and 100Mi and every node offers 4 CPUs
and 16Gi, so each decision takes the resource-aware path (fit, then spread).

1. A scratch database is seeded with ``--nodes`` Ready nodes and ``--projects`` Pending
   projects, written through the server's registry (the API's write path without HTTP),
   so they are exactly what the API would have stored.
2. The real ``cara-server`` program starts on it (a subprocess, JSON logs to a file) with
   only the scheduler enabled (``CARA_CONTROLLERS=scheduler``).
3. This process watches projects over HTTP from the seeded revision until every project is
   Scheduled. WHEN a project was placed is not when this watch saw it (the watch opens
   after readyz and replays a backlog in bursts): it is the ``Scheduled`` entry of the
   project's ``status.history``, stamped by the server in the request that wrote the
   placement, just before that transaction commits (same host, wall clock).

Figures, all from those server-side placement times: from the server's start (wall clock
just before the process is spawned) and from its ``controller_manager.leading`` log line
to the last placement; first to last placement and the assignment rate over that span;
and the spread (projects per node, max and min). With ``--floor N`` it also times N plain
status writes straight into the store (the same transaction a scheduling PATCH ends in),
the ceiling any scheduler reaches on this machine.

``BENCH_SERVER_CMD`` replaces the ``cara-server`` command line (e.g. to run it under a
profiler). A 2-core machine runs PostgreSQL, the server and this script at once: the figures
compare changes on one machine, they are not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CARA_SERVER, free_port, postgres, scratch_database, terminate

from caravanserai.api.base import utcnow
from caravanserai.api.node import Heartbeat, Node, NodeState
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.api.watch import EventType
from caravanserai.client.http import CaravanseraiClient
from caravanserai.registry import Registries, lifecycle
from caravanserai.store.postgres import PostgresStore

REQUESTS = {"requests": {"cpus": 0.1, "memory": "100Mi"}}
ALLOCATABLE = {"cpu": "4", "memory": "16Gi"}


def a_project(name: str, requests: bool = False) -> Project:
    service: dict[str, Any] = {"name": "web", "image": "busybox:latest"}
    if requests:
        service["resources"] = REQUESTS
    return Project.model_validate(
        {
            "metadata": {"name": name, "labels": {"bench": "schedule"}},
            "spec": {"services": [service]},
        }
    )


async def seed(
    dsn: str, nodes: int, projects: int, concurrency: int = 32, requests: bool = False
) -> int:
    """Write the Ready nodes and Pending projects; returns the revision after seeding."""
    store = await PostgresStore.open(dsn, pool_min=4, pool_max=concurrency)
    registries = Registries(store)
    sem = asyncio.Semaphore(concurrency)
    ready = Heartbeat(state=NodeState.READY, capacity=ALLOCATABLE if requests else None,
                      allocatable=ALLOCATABLE if requests else None)

    async def node(i: int) -> None:
        name = f"node-{i:04d}"
        async with sem:
            model = Node.model_validate({"metadata": {"name": name}, "spec": {"hostname": name}})
            await registries.nodes.create(model)
            await registries.nodes.heartbeat(name, ready)

    async def project(i: int) -> None:
        async with sem:
            await registries.projects.create(a_project(f"proj-{i:05d}", requests))

    try:
        await asyncio.gather(*(node(i) for i in range(nodes)))
        await asyncio.gather(*(project(i) for i in range(projects)))
        return await store.current_revision()
    finally:
        await store.close()


async def store_floor(dsn: str, writes: int, concurrency: int = 16) -> float:
    """Seconds for ``writes`` status writes straight into the store (no HTTP, no scheduler)."""
    store = await PostgresStore.open(dsn, pool_min=4, pool_max=concurrency)
    registries = Registries(store)
    sem = asyncio.Semaphore(concurrency)
    try:
        await asyncio.gather(
            *(registries.projects.create(a_project(f"floor-{i:05d}")) for i in range(writes))
        )

        async def write(i: int) -> None:
            name = f"floor-{i:05d}"

            def scheduled(obj: dict[str, Any]) -> dict[str, Any]:
                from caravanserai.api.project import ProjectStatus

                status = ProjectStatus.model_validate(obj.get("status") or {})
                lifecycle.set_phase(
                    status,
                    name,
                    ProjectPhase.SCHEDULED,
                    reason="Scheduled",
                    message="floor",
                    now=utcnow(),
                    node_ref="node-0000",
                )
                obj["status"] = status.to_wire()
                return obj

            async with sem:
                await store.update("Project", name, scheduled)

        start = time.perf_counter()
        await asyncio.gather(*(write(i) for i in range(writes)))
        return time.perf_counter() - start
    finally:
        await store.close()


@contextlib.contextmanager
def server(dsn: str, log_path: Path, workers: int | None) -> Iterator[tuple[str, float]]:
    """Run cara-server with only the scheduler; yields (base URL, wall time it started)."""
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=dsn,
        HOST="127.0.0.1",
        PORT=str(port),
        CARA_CONTROLLERS="scheduler",
        DEBUG="false",
        # On loopback only, without tokens: anonymous requests act as admin.
        CARA_INSECURE_ALLOW_ANONYMOUS="true",
    )
    if workers is not None:
        env["CARA_SCHEDULER_WORKERS"] = str(workers)
    with open(log_path, "w") as log:
        started = time.time()
        cmd = os.environ.get("BENCH_SERVER_CMD", CARA_SERVER).split()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=tempfile.gettempdir())
    try:
        yield f"http://127.0.0.1:{port}", started
    finally:
        terminate(proc)


def leading_at(log_path: Path) -> float | None:
    """Wall time of the server's ``controller_manager.leading`` log line."""
    with contextlib.suppress(FileNotFoundError):
        for line in log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == "controller_manager.leading":
                    return datetime.fromisoformat(record["timestamp"]).timestamp()
    return None


def placed_at(p: Project) -> float | None:
    """When the server recorded the project's (latest) placement: its Scheduled history
    entry, as epoch seconds."""
    for h in reversed(p.status.history):
        if h.phase is ProjectPhase.SCHEDULED:
            return h.time.timestamp()
    return None


async def observe(
    base: str, revision: int, projects: int
) -> tuple[float, float, Counter[str], float]:
    """Watch until every project is Scheduled; (first, last) server-recorded placement
    times, per-node counts, and the span between the first and last RECEIPT (shown only
    to compare with the old, receipt-based figure)."""
    async with CaravanseraiClient(base, timeout=5) as client:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(Exception):
                if await client.readyz():
                    break
            if time.monotonic() > deadline:
                raise SystemExit("cara-server did not become ready within 60 s")
            await asyncio.sleep(0.1)
        placed: dict[str, str] = {}
        times: dict[str, float] = {}
        first_seen = last_seen = 0.0
        async for event in client.projects.watch(str(revision)):
            if event.type is EventType.ERROR:
                raise SystemExit(f"watch failed: {event.error}")
            p = event.object
            if p is None or p.status.phase is not ProjectPhase.SCHEDULED or not p.status.node_ref:
                continue
            at = placed_at(p)
            if at is None:
                raise SystemExit(f"{p.metadata.name} is Scheduled without a history entry")
            placed[p.metadata.name] = p.status.node_ref
            times[p.metadata.name] = at
            last_seen = time.time()
            first_seen = first_seen or last_seen
            if len(placed) >= projects:
                break
        return (min(times.values()), max(times.values()), Counter(placed.values()),
                last_seen - first_seen)


async def run(args: argparse.Namespace, dsn: str, log_path: Path) -> None:
    t = time.perf_counter()
    revision = await seed(dsn, args.nodes, args.projects, requests=args.requests)
    print(
        f"seeded {args.nodes} Ready nodes and {args.projects} Pending projects"
        f"{' with resource requests' if args.requests else ''} "
        f"in {time.perf_counter() - t:.1f} s (revision {revision})"
    )
    with server(dsn, log_path, args.workers) as (base, started):
        first, last, per_node, seen_span = await observe(base, revision, args.projects)
    lead = leading_at(log_path)
    counts = [per_node.get(f"node-{i:04d}", 0) for i in range(args.nodes)]
    print(f"all {args.projects} Scheduled {last - started:.2f} s after cara-server started")
    if lead is not None:
        print(f"  from becoming leader (informers list + schedule): {last - lead:.2f} s")
    span = last - first
    print(
        f"  first to last assignment: {span:.2f} s "
        f"({args.projects / span if span else float('inf'):.0f} assignments/s)"
    )
    print(
        f"  (by receipt at this watch, the old measure: first to last {seen_span:.2f} s, "
        f"{args.projects / seen_span if seen_span else float('inf'):.0f}/s)"
    )
    print(
        f"spread: max {max(counts)} / min {min(counts)} projects per node "
        f"(ideal {args.projects // args.nodes}), {counts.count(0)} empty nodes"
    )
    if args.floor:
        seconds = await store_floor(dsn, args.floor)
        print(
            f"store floor: {args.floor} status writes straight into the store in "
            f"{seconds:.2f} s ({args.floor / seconds:.0f}/s, 16 concurrent)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("CARA_TEST_DATABASE_URL"),
        help="a PostgreSQL server the DSN may CREATE DATABASE on [default: embedded]",
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="scheduler workers [default: the controller's, 16]",
    )
    parser.add_argument(
        "--floor", type=int, default=0, help="also time this many plain store writes"
    )
    parser.add_argument(
        "--requests", action="store_true",
        help="projects request CPU and memory; nodes offer allocatable (resource-aware path)",
    )
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="cara-bench-schedule-"))
    log_path = log_dir / "server.log"
    with postgres(args.dsn) as admin, scratch_database(admin) as dsn:
        asyncio.run(run(args, dsn, log_path))
    print(f"server log: {log_path}")


if __name__ == "__main__":
    main()
