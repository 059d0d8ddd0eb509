#!/usr/bin/env python
"""Benchmark: server CPU per write against the number of node-scoped watches.

    .venv/bin/python hack/bench/fanout.py --watches 10 1000 --writes 2000

What a cluster of N agents costs the control plane: each agent watches
``/api/v1/projects?fieldSelector=status.nodeRef=<node>``. The script runs the real
``cara-server`` (as ``api.py`` does), binds 10 projects to nodes ``n0``…``n9``, opens W
node-scoped watches (nodes ``n0``…``n{W-1}``, in a separate process that only reads), then
PUTs ``--writes`` updates round robin over the 10 projects (open loop at ``--rate``) and
reports the server's CPU per write. With indexed dispatch the figure is about the same for
10 and 1,000 watches (each write reaches one watcher); evaluated against every watch it
grows with W. Everything listens on 127.0.0.1 only; the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import cpu_seconds, project, server
from harness import postgres, scratch_database

PROJECTS = 10


def reader_process(base: str, watches: int, revision: str, ready: Any, done: Any) -> None:
    """Open the node-scoped watches and read them until told to stop."""

    async def main() -> None:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as http:
            responses = []
            for start in range(0, watches, 100):
                responses += await asyncio.gather(*(
                    http.get(f"{base}/api/v1/projects",
                             params={"watch": "true", "resourceVersion": revision,
                                     "fieldSelector": f"status.nodeRef=n{i}"},
                             timeout=aiohttp.ClientTimeout(total=None))
                    for i in range(start, min(start + 100, watches))
                ))
            ready.set()

            async def drain(resp: aiohttp.ClientResponse) -> None:
                async for _ in resp.content.iter_any():
                    pass

            tasks = [asyncio.create_task(drain(r)) for r in responses]
            await asyncio.to_thread(done.wait, 600)
            for t in tasks:
                t.cancel()
            for r in responses:
                r.close()

    asyncio.run(main())


async def run(base: str, pid: int, watches: int, writes: int, rate: float) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        names = [f"f{i}" for i in range(PROJECTS)]
        for i, name in enumerate(names):
            async with http.post(f"{base}/api/v1/projects", json=project(name)) as r:
                assert r.status in (201, 409), await r.text()
            async with http.patch(f"{base}/api/v1/projects/{name}/status",
                                  json={"phase": "Scheduled", "nodeRef": f"n{i}"}) as r:
                assert r.status in (204, 409), await r.text()
        async with http.get(f"{base}/api/v1/projects", params={"limit": "1"}) as r:
            revision = (await r.json())["metadata"]["resourceVersion"]
        ctx = mp.get_context("spawn")
        ready, done = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=reader_process, args=(base, watches, revision, ready, done))
        proc.start()
        try:
            if not await asyncio.to_thread(ready.wait, 120):
                raise SystemExit("watchers did not connect")
            await asyncio.sleep(1.0)
            inflight = asyncio.Semaphore(32)
            failures = 0

            async def one(seq: int) -> None:
                nonlocal failures
                name = names[seq % PROJECTS]
                # A status-preserving spec update (the server keeps status on PUT).
                async with inflight, http.put(f"{base}/api/v1/projects/{name}",
                                              json=project(name, seq)) as r:
                    await r.read()
                    failures += r.status >= 300

            cpu0 = cpu_seconds(pid)
            start = time.monotonic()
            tasks = []
            for seq in range(writes):
                delay = start + seq / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(seq)))
            await asyncio.gather(*tasks)
            await asyncio.sleep(0.5)  # let the last deliveries leave
            cpu = cpu_seconds(pid) - cpu0
        finally:
            done.set()
            await asyncio.to_thread(proc.join, 30)
            with contextlib.suppress(Exception):
                proc.kill()
    per_write = cpu / writes * 1e6
    print(f"  {watches:5d} node-scoped watches: server CPU {per_write:7.0f} µs per write "
          f"({writes} writes, {failures} failed)")
    return per_write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("CARA_TEST_DATABASE_URL"))
    parser.add_argument("--watches", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=300.0)
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="cara-bench-fanout-"))
    figures = {}
    try:
        with postgres(args.dsn) as admin:
            for w in args.watches:
                with scratch_database(admin) as dsn, \
                        server(dsn, log_dir / f"server-{w}.log") as (base, pid):
                    figures[w] = asyncio.run(run(base, pid, w, args.writes, args.rate))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    if len(figures) >= 2:
        lo, hi = min(figures), max(figures)
        print(f"ratio {hi} / {lo} watches: {figures[hi] / figures[lo]:.2f}x "
              f"({os.cpu_count()} CPUs; machine shared, compare within one run)")


if __name__ == "__main__":
    main()
