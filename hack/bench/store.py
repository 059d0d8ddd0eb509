#!/usr/bin/env python
"""Benchmark the store: write throughput and commit→watcher delivery latency.

    .venv/bin/python hack/bench/store.py                 # embedded PostgreSQL (as the tests)
    .venv/bin/python hack/bench/store.py --dsn postgresql://postgres@127.0.0.1:5432/postgres

The DSN must be allowed to CREATE DATABASE: the benchmark works in a scratch database and
drops it afterwards. Without --dsn (or CARA_TEST_DATABASE_URL) it starts the same embedded
PostgreSQL the test suite uses, with the same test settings (fsync off, ...).

Figures:
* writes/s with 1, 8 and 32 concurrent writers in one process (one PostgresStore, as in
  cara-server, its watch hub running): status-like updates of one object per writer, and
  creates; plus the process CPU time per write (the client is usually the bottleneck).
* delivery latency to a watcher in ANOTHER process (its own PostgresStore and hub, as a
  second server replica), idle (one write every 5 ms) and under 32 writers. Timed per
  write, from three starting points to the moment the watcher's ``next()`` returned the
  event, all raw and signed (nothing clamped), p50/p99 by nearest rank:

  - "commit→recv": from the write transaction's commit, as PostgreSQL recorded it
    (``track_commit_timestamp``: on in the embedded server; with ``--dsn`` only if the
    server has it on, else "n/a"). Wall clock of the same host on both sides.
  - "issue→recv": from the ``store.update()`` call starting (monotonic clock, shared by
    both processes): an upper bound of commit→recv, since the commit happens inside.
  - "ack→recv": from ``store.update()`` returning: a lower bound of commit→recv; negative
    when the event reaches the watcher before the writer sees its own commit (common
    under load: the writer's coroutine waits for the event loop).

  A write counts only when the watcher received it; missing ones are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import commit_times, pct, postgres, scratch_database

from caravanserai.store.postgres import PostgresStore
from caravanserai.store.types import Obj


def project(name: str) -> Obj:
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Project",
        "metadata": {"name": name, "labels": {"bench": "yes"}},
        "spec": {"services": [{"name": "web", "image": "busybox", "command": ["httpd", "-f"]}]},
    }


# -- throughput -------------------------------------------------------------------------------


async def run_writers(
    n: int, seconds: float, op: Callable[[int, int], Awaitable[Any]]
) -> tuple[float, float]:
    """(ops per second, CPU ms per op) of n coroutines calling op(writer, i) for `seconds`."""
    done = 0
    stop = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            i += 1
            await op(w, i)
            done += 1

    t0, c0 = time.monotonic(), time.process_time()
    async with asyncio.TaskGroup() as tg:
        for w in range(n):
            tg.create_task(worker(w))
    elapsed, cpu = time.monotonic() - t0, time.process_time() - c0
    return done / elapsed, cpu / max(done, 1) * 1000


async def throughput(dsn: str, seconds: float) -> None:
    print(f"{'writers':>8} {'updates/s':>10} {'cpu ms/upd':>11} {'creates/s':>10} "
          f"{'cpu ms/cr':>10}")
    for n in (1, 8, 32):
        async with await PostgresStore.open(dsn, pool_min=n, pool_max=n + 2) as store:
            run = uuid.uuid4().hex[:6]
            for w in range(n):
                await store.create(project(f"u-{run}-{w}"))

            async def update(w: int, i: int, run: str = run, store: PostgresStore = store) -> None:
                def status(o: Obj) -> Obj:
                    o["status"] = {"phase": "Running", "observedGeneration": 1, "beat": i}
                    return o

                await store.update("Project", f"u-{run}-{w}", status)

            async def create(w: int, i: int, run: str = run, store: PostgresStore = store) -> None:
                await store.create(project(f"c-{run}-{w}-{i}"))

            await run_writers(n, 0.3, update)  # warm up: connections, prepared statements
            ups, upcpu = await run_writers(n, seconds, update)
            crs, crcpu = await run_writers(n, seconds, create)
        print(f"{n:>8} {ups:>10.0f} {upcpu:>11.3f} {crs:>10.0f} {crcpu:>10.3f}", flush=True)


# -- latency ----------------------------------------------------------------------------------


def watcher_main(dsn: str, ready: Any, stop: Any, results: Any) -> None:
    """In another process: watch everything, note (revision, (monotonic, wall) time) on
    receipt."""

    async def main() -> None:
        async with await PostgresStore.open(dsn, pool_min=1, pool_max=2) as store:
            received: list[tuple[int, tuple[float, float]]] = []
            async with store.watch(None, await store.current_revision()) as w:
                ready.set()
                while not stop.is_set():
                    ev = await w.next(timeout=0.1)
                    if ev is not None:
                        received.append((ev.revision, (time.monotonic(), time.time())))
            results.put(received)

    asyncio.run(main())


async def latency(dsn: str, label: str, writers: int, seconds: float, pause: float) -> None:
    ctx = mp.get_context("spawn")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=watcher_main, args=(dsn, ready, stop, results), daemon=True)
    proc.start()
    sent: dict[int, tuple[float, float]] = {}
    try:
        async with await PostgresStore.open(dsn, pool_min=writers, pool_max=writers + 2) as store:
            run = uuid.uuid4().hex[:6]
            for w in range(writers):
                await store.create(project(f"l-{run}-{w}"))
            if not await asyncio.to_thread(ready.wait, 60):
                raise RuntimeError("the watcher process did not start")

            async def update(w: int, i: int) -> None:
                def status(o: Obj) -> Obj:
                    o["status"] = {"phase": "Running", "beat": i}
                    return o

                t_issue = time.monotonic()
                obj = await store.update("Project", f"l-{run}-{w}", status)
                sent[int(obj["metadata"]["resourceVersion"])] = (t_issue, time.monotonic())
                if pause:
                    await asyncio.sleep(pause)

            rate, _ = await run_writers(writers, seconds, update)
            last = await store.current_revision()
        await asyncio.sleep(0.5)  # let the watcher drain
        stop.set()
        received = dict(await asyncio.to_thread(results.get, True, 30))
    finally:
        stop.set()
        await asyncio.to_thread(proc.join, 10)
    missing = [r for r in sent if r not in received]
    got = {r: times for r, times in sent.items() if r in received}
    ack = [received[r][0] - t_ack for r, (_, t_ack) in got.items()]
    issue = [received[r][0] - t_issue for r, (t_issue, _) in got.items()]
    committed = await asyncio.to_thread(commit_times, dsn, got)
    commit = ([received[r][1] - committed[r] for r in got if r in committed]
              if committed is not None else [])

    def fig(name: str, values: list[float]) -> str:
        if not values:
            return f"{name} n/a"
        return (f"{name} p50 {pct(values, 50) * 1000:+7.2f} ms "
                f"p99 {pct(values, 99) * 1000:+7.2f} ms")

    negative = sum(1 for v in ack if v < 0)
    print(
        f"{label:>14} {len(sent):>6} writes ({rate:5.0f}/s)  "
        f"{fig('commit→recv', commit)}   {fig('issue→recv (upper)', issue)}   "
        f"{fig('ack→recv (lower)', ack)} ({negative}/{len(ack)} negative)"
        + (f"   MISSING {len(missing)}" if missing else ""),
        flush=True,
    )
    assert last >= max(sent)


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("CARA_TEST_DATABASE_URL"),
                        help="an admin DSN (default: start the embedded PostgreSQL)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    args = parser.parse_args()

    with postgres(args.dsn) as admin, scratch_database(admin) as dsn:
        with psycopg.connect(admin, autocommit=True) as conn:
            version = conn.execute(b"SHOW server_version").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'}, {os.cpu_count()} CPUs, "
              f"{args.seconds:g} s per run, load average {os.getloadavg()[0]:.2f}")
        asyncio.run(throughput(dsn, args.seconds))
        print()
        asyncio.run(latency(dsn, "idle", 1, args.seconds, pause=0.005))
        asyncio.run(latency(dsn, "32 writers", 32, args.seconds, pause=0.0))


if __name__ == "__main__":
    main()
