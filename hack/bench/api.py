#!/usr/bin/env python
"""Benchmark cara-server over HTTP: create throughput and commit→client watch latency.

    .venv/bin/python hack/bench/api.py                   # embedded PostgreSQL (as the tests)
    .venv/bin/python hack/bench/api.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python hack/bench/api.py --write heartbeat --rate 500 --watchers 100

It runs the real ``cara-server`` program (a subprocess, JSON logs to a file) on a scratch
database (the DSN must be allowed to CREATE DATABASE; without --dsn or
CARA_TEST_DATABASE_URL the embedded PostgreSQL of the test suite is started, with its test
settings: fsync off, ...). Everything listens on 127.0.0.1 only.

Figures:

1. **Create throughput**: ``--clients`` (32) concurrent HTTP clients (closed loop: each
   sends its next POST when the previous answered) POST ``--creates`` projects. creates/s
   counts only 201 answers over the whole run's duration; failures are counted by status.
   Latency: from just before the POST is handed to aiohttp to the whole answer read, for
   successful requests (failed ones reported separately).
2. **Watch latency**: ``--watchers`` (100) watch streams on /api/v1/projects (in a separate
   process, so reading them does not slow the writer), while a writer issues ``--rate``
   (500) writes/s for ``--seconds``, open loop: a PUT of a project (annotation
   ``bench/seq``) round robin over 50 projects, or with ``--write heartbeat`` node heartbeats
   (``capacity.seq``) watched on /api/v1/nodes. Each write's send time is its SCHEDULED
   time (``start + seq / rate``), taken before any client-side queueing (the 64-request
   in-flight limit, the event loop): time a write waits on our side counts, so a server
   that falls behind cannot hide it (no coordinated omission). Per write and watcher, to
   the moment the watcher read the line carrying it, all raw and signed:

   - ``commit→recv``: from the write's commit as PostgreSQL recorded it (its event row's
     ``track_commit_timestamp``; the embedded server has it on, with ``--dsn`` only if
     the server does, else n/a), wall clock of this host on both sides;
   - ``send→recv``: from the scheduled send time: an upper bound;
   - ``ack→recv``: from the HTTP answer read: a lower bound (negative when the event
     beats the answer).

   Only successful writes are counted (achieved rate, deliveries); failed ones are
   reported by status. Also: whether every watcher received every successful write, and
   the CPU use of the server, of OUR PostgreSQL server's processes (the postmaster behind
   the DSN and its children, when on this host; backends that exit mid-run are missed,
   so a lower bound; n/a otherwise), the writer and the readers.

A 2-core machine runs the server, PostgreSQL and the load generator at once: the figures
are for comparing changes on one machine, not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CARA_SERVER, commit_times, ms, pct, postgres, scratch_database, terminate

N_TARGETS = 50
SERVER_ENV: dict[str, str] = {}  # --server-env KEY=VALUE
SEQ_RE = re.compile(rb'"(?:bench/seq|seq)":\s*"(\d+)"')


def project(name: str, seq: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"bench": "yes"}}
    if seq is not None:
        meta["annotations"] = {"bench/seq": str(seq)}
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Project",
        "metadata": meta,
        "spec": {"services": [{"name": "web", "image": "busybox:latest",
                               "command": ["httpd", "-f"]}]},
    }


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "caravanserai/v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"hostname": name}}


# -- PostgreSQL and the server ------------------------------------------------------------


@contextlib.contextmanager
def server(
    database_url: str, log_path: Path, profile: str | None = None
) -> Iterator[tuple[str, int]]:
    """Run cara-server on a free port; yield (base URL, pid). With ``profile``, under
    cProfile (stats written to that path when the server exits)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CARA_") or k == "CARA_CONTROLLERS"}
    # On loopback only, without tokens: anonymous requests act as admin.
    env.update(DATABASE_URL=database_url, CARA_DB_POOL_SIZE="40", DEBUG="false",
               CARA_BOOKMARK_INTERVAL="10", CARA_INSECURE_ALLOW_ANONYMOUS="true")
    # The API alone by default: controllers (the scheduler reacting to every project
    # write) would add their own work to the figures. --controllers keeps them.
    env.setdefault("CARA_CONTROLLERS", "none")
    env.update(SERVER_ENV)
    with open(log_path, "w") as log:
        command = [CARA_SERVER]
        if profile:
            command = [sys.executable, "-m", "cProfile", "-o", profile,
                       "-m", "caravanserai.server.main"]
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=tempfile.gettempdir(),
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"cara-server exited: {log_path.read_text()[-2000:]}")
            for line in log_path.read_text().splitlines():
                if '"listening"' in line:
                    yield f"http://{json.loads(line)['address']}", proc.pid
                    return
            time.sleep(0.1)
        raise SystemExit("cara-server did not start")
    finally:
        terminate(proc)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postmaster_pid(dsn: str) -> int | None:
    """The pid of the PostgreSQL server behind ``dsn`` if it runs on this host (the parent
    of our backend), else None."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(b"SELECT pg_backend_pid()").fetchone()
    try:
        status = Path(f"/proc/{row[0] if row else 0}/status").read_text()
    except OSError:
        return None  # not on this host (a container's pid namespace, another machine)
    ppid = int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("PPid:")))
    comm = Path(f"/proc/{ppid}/comm").read_text().strip() if ppid else ""
    return ppid if comm in ("postgres", "postmaster") else None


def postgres_cpu(postmaster: int | None) -> dict[int, float]:
    """CPU seconds of our PostgreSQL server's processes (the postmaster and its children)."""
    out: dict[int, float] = {}
    if postmaster is None:
        return out
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) == postmaster or int(fields[1]) == postmaster:
                out[int(entry.name)] = cpu_seconds(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two ``postgres_cpu`` samples by processes alive at the
    second (those that exited in between are missed: a lower bound)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, to tell how loaded the machine was."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# -- 1. create throughput -----------------------------------------------------------------


async def bench_creates(base: str, clients: int, total: int) -> None:
    latencies: list[float] = []  # successful requests only
    failed: list[float] = []
    failures: Counter[str] = Counter()
    counter = iter(range(total))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def client() -> None:
            for i in counter:
                t = time.monotonic()
                try:
                    async with http.post(f"{base}/api/v1/projects",
                                         json=project(f"c{i:06d}")) as r:
                        await r.read()
                        status = str(r.status)
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__
                took = time.monotonic() - t
                if status == "201":
                    latencies.append(took)
                else:
                    failures[status] += 1
                    failed.append(took)

        start = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.monotonic() - start
    ok = len(latencies)
    print(f"creates over HTTP, {clients} concurrent clients, {total} projects:")
    print(f"  throughput      {ok / elapsed:8.0f} creates/s  ({ok} created in {elapsed:.1f} s; "
          f"{sum(failures.values())} failed{': ' + repr(dict(failures)) if failures else ''})")
    print(f"  latency p50     {ms(pct(latencies, 50))}   (successful requests)")
    print(f"  latency p99     {ms(pct(latencies, 99))}")
    if failed:
        print(f"  failed p50      {ms(pct(failed, 50))}   p99 {ms(pct(failed, 99))}")


# -- 2. watch latency -----------------------------------------------------------------------


def watcher_process(base: str, plural: str, n: int, revision: str, expected: int,
                    ready: Any, finished: Any, results: Any) -> None:
    """Open n watches, report readiness, then record (seq, (monotonic, wall) recv time) per
    watcher; stop when every watcher has ``expected`` writes, or 5 s after ``finished``
    (some writes failed, so fewer arrive)."""

    async def main() -> list[dict[int, tuple[float, float]]]:
        received: list[dict[int, tuple[float, float]]] = [{} for _ in range(n)]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            responses = await asyncio.gather(*(
                http.get(f"{base}/api/v1/{plural}",
                         params={"watch": "true", "resourceVersion": revision,
                                 "allowWatchBookmarks": "true"},
                         timeout=aiohttp.ClientTimeout(total=None))
                for _ in range(n)
            ))
            ready.set()

            async def read(i: int, resp: aiohttp.ClientResponse) -> None:
                seen = received[i]
                tail = b""
                async for chunk in resp.content.iter_any():
                    now = (time.monotonic(), time.time())
                    data = tail + chunk
                    cut = data.rfind(b"\n") + 1
                    for m in SEQ_RE.finditer(data, 0, cut):
                        seen.setdefault(int(m[1]), now)
                    tail = data[cut:]
                    if len(seen) >= expected:
                        return

            async def drained() -> None:
                await asyncio.to_thread(finished.wait, 120)
                await asyncio.sleep(5)

            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(130):
                    readers = asyncio.gather(*(read(i, r) for i, r in enumerate(responses)))
                    stop = asyncio.ensure_future(drained())
                    await asyncio.wait([readers, stop], return_when=asyncio.FIRST_COMPLETED)
                    readers.cancel()
                    stop.cancel()
                    await asyncio.gather(readers, stop, return_exceptions=True)
            for r in responses:
                r.close()
        return received

    received = asyncio.run(main())
    results.put((received, time.process_time()))


async def bench_watch(base: str, dsn: str, pid: int, watchers: int, rate: float,
                      seconds: float, write: str) -> None:
    plural = "nodes" if write == "heartbeat" else "projects"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        targets = [f"t{i:02d}" for i in range(N_TARGETS)]
        for name in targets:
            body = node(name) if write == "heartbeat" else project(name)
            async with http.post(f"{base}/api/v1/{plural}", json=body) as r:
                assert r.status in (201, 409), await r.text()
        async with http.get(f"{base}/api/v1/{plural}", params={"limit": "1"}) as r:
            revision = (await r.json())["metadata"]["resourceVersion"]

        total = int(rate * seconds)
        ctx = mp.get_context("spawn")
        ready, finished, results = ctx.Event(), ctx.Event(), ctx.Queue()
        proc = ctx.Process(
            target=watcher_process,
            args=(base, plural, watchers, revision, total, ready, finished, results),
        )
        proc.start()
        if not await asyncio.to_thread(ready.wait, 60):
            raise SystemExit("watchers did not connect")
        await asyncio.sleep(1.0)  # let every stream settle on the server

        sent: dict[int, float] = {}  # scheduled send time, before any queueing of ours
        acked: dict[int, float] = {}  # successful writes only
        revision_of: dict[int, int] = {}  # seq -> the write's revision (from its answer)
        failures: Counter[str] = Counter()
        inflight = asyncio.Semaphore(64)

        async def one(seq: int, scheduled: float) -> None:
            name = targets[seq % N_TARGETS]
            sent[seq] = scheduled
            async with inflight:
                if write == "heartbeat":
                    req = http.post(f"{base}/api/v1/nodes/{name}/heartbeat",
                                    json={"capacity": {"seq": str(seq)}})
                else:
                    req = http.put(f"{base}/api/v1/projects/{name}", json=project(name, seq))
                try:
                    async with req as r:
                        body = await r.read()
                        status = r.status
                except aiohttp.ClientError as exc:
                    failures[type(exc).__name__] += 1
                    return
                if status >= 300:
                    failures[str(status)] += 1
                    return
                acked[seq] = time.monotonic()
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    rv = json.loads(body)["metadata"]["resourceVersion"] if body else None
                    if rv is not None:
                        revision_of[seq] = int(rv)

        postmaster = await asyncio.to_thread(postmaster_pid, dsn)
        cpu0, me0, pg0, (busy0, all0) = (
            cpu_seconds(pid), time.process_time(), postgres_cpu(postmaster), machine_busy()
        )
        start = time.monotonic()
        tasks = []
        for seq in range(total):
            scheduled = start + seq / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(seq, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
        finished.set()
        cpu = cpu_seconds(pid) - cpu0
        me = time.process_time() - me0
        pg = cpu_used(pg0, postgres_cpu(postmaster)) if postmaster else float("nan")
        busy1, all1 = machine_busy()
        received, watcher_cpu = await asyncio.to_thread(results.get, True, 180)
        await asyncio.to_thread(proc.join, 30)

    ok = set(acked)
    upper = [t[0] - sent[s] for w in received for s, t in w.items() if s in ok]
    lower = [t[0] - acked[s] for w in received for s, t in w.items() if s in ok]
    committed = await asyncio.to_thread(commit_times, dsn, revision_of.values())
    commit: list[float] = []
    if committed is not None:
        at = {s: committed[r] for s, r in revision_of.items() if r in committed}
        commit = [t[1] - at[s] for w in received for s, t in w.items() if s in at]
    complete = sum(1 for w in received if ok <= w.keys())
    write_lat = [acked[s] - sent[s] for s in acked]
    what = "heartbeats" if write == "heartbeat" else "project PUTs"
    print(f"watch latency, {watchers} watches on /api/v1/{plural}, {what} at {rate:.0f}/s "
          f"for {seconds:.0f} s:")
    print(f"  writes          {len(ok) / elapsed:8.0f} /s succeeded ({total} sent, {len(ok)} ok, "
          f"{sum(failures.values())} failed{' ' + repr(dict(failures)) if failures else ''}; "
          f"send→answer p50 {ms(pct(write_lat, 50)).strip()}, "
          f"p99 {ms(pct(write_lat, 99)).strip()})")
    print(f"  delivered       {complete}/{watchers} watchers got every successful write "
          f"({len(upper)} deliveries)")
    if commit:
        print(f"  commit→recv p50 {ms(pct(commit, 50))}   p99 {ms(pct(commit, 99))}")
    else:
        print("  commit→recv     n/a (the server does not track commit timestamps)")
    print(f"  send→recv p50   {ms(pct(upper, 50))}   p99 {ms(pct(upper, 99))}   (upper bound)")
    negative = sum(1 for v in lower if v < 0)
    print(f"  ack→recv  p50   {ms(pct(lower, 50))}   p99 {ms(pct(lower, 99))}   (lower bound; "
          f"{negative}/{len(lower)} negative)")
    share = 100 * (busy1 - busy0) / (all1 - all0)
    print(f"  CPU (% of one core) server {cpu / elapsed * 100:.0f}, "
          f"postgres {pg / elapsed * 100:.0f}, writer {me / elapsed * 100:.0f}, "
          f"watch readers {watcher_cpu:.0f} s in all; "
          f"machine {share:.0f}% busy of {os.cpu_count()} cores")
    print(f"  server CPU per write {cpu / total * 1000:.2f} ms "
          f"(HTTP write + fan-out to {watchers} watchers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("CARA_TEST_DATABASE_URL"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--creates", type=int, default=4000)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--write", choices=("put", "heartbeat"), default="put")
    parser.add_argument("--skip-creates", action="store_true")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for cara-server, e.g. CARA_WATCH_LINGER=0")
    parser.add_argument("--controllers", action="store_true",
                        help="run the controller manager too (CARA_CONTROLLERS unset)")
    parser.add_argument("--profile", metavar="PATH",
                        help="run the server under cProfile, stats to PATH")
    args = parser.parse_args()

    SERVER_ENV.update(item.split("=", 1) for item in args.server_env)
    if args.controllers:
        os.environ["CARA_CONTROLLERS"] = "*"
    log_dir = Path(tempfile.mkdtemp(prefix="cara-bench-api-"))
    try:
        with postgres(args.dsn) as admin, scratch_database(admin) as dsn, \
                server(dsn, log_dir / "server.log", args.profile) as (base, pid):
            print(f"cara-server at {base} (pid {pid}), {os.cpu_count()} CPUs")
            if not args.skip_creates:
                asyncio.run(bench_creates(base, args.clients, args.creates))
            asyncio.run(bench_watch(base, dsn, pid, args.watchers, args.rate, args.seconds,
                                    args.write))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
