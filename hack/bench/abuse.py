#!/usr/bin/env python
"""Soak cara-server as an abusive client would; print its memory and an honest client's p99.

    .venv/bin/python hack/bench/abuse.py                      # this tree, embedded PostgreSQL
    .venv/bin/python hack/bench/abuse.py --tree /tmp/old      # the server of another checkout

It runs the real ``cara-server`` (a subprocess on 127.0.0.1, controllers off) on a scratch
database and, for ``--seconds`` (20), all at once:

- ``--objects`` (40) projects of ~1 MB each (eight env values of 125 KiB), then
  ``--updates`` (100) updates of one of them (the hub's event ring);
- ``--watchers`` (50) slow watchers: watch streams from revision 0 whose sockets are never
  read;
- body floods: ``--flooders`` (8) clients each POSTing 8 MiB bodies (declared and chunked)
  over and over, and ``--idle`` (300) connections that send half a request head and stall;
- one honest client: GET of a small project every 50 ms, its latency recorded.

Figures: server RSS before, at the peak during, and after (everything closed, 5 s later);
the honest client's p50/p99 and errors during the flood. Everything is bounded in count and
time and talks to 127.0.0.1 only. A 2-core machine shared with PostgreSQL and the load
generator: compare runs on one machine, not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ms, pct, postgres, scratch_database, terminate

BIG_VALUE = "x" * (125 * 1024)


def project(name: str, big: bool, seq: int = 0) -> dict[str, Any]:
    env = [{"name": f"BIG{i}", "value": BIG_VALUE} for i in range(8)] if big else []
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Project",
        "metadata": {"name": name, "labels": {"seq": str(seq)}},
        "spec": {"services": [{"name": "web", "image": "busybox:latest", "env": env}]},
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def server(database_url: str, tree: str | None, log_path: Path) -> Iterator[tuple[str, int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARA_")}
    # On loopback only, without tokens: anonymous requests act as admin.
    env.update(DATABASE_URL=database_url, CARA_CONTROLLERS="none", DEBUG="false",
               CARA_MAX_BODY_BYTES=str(2 * 1024 * 1024), CARA_INSECURE_ALLOW_ANONYMOUS="true")
    if tree:
        env["PYTHONPATH"] = tree
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "caravanserai.server.main", "--host", "127.0.0.1",
             "--port", "0"],
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


async def slow_watcher(host: str, port: int, stop: asyncio.Event) -> None:
    """A watch from revision 0 that never reads: the server must not buffer for it."""
    with contextlib.suppress(OSError):
        _, writer = await asyncio.open_connection(host, port, limit=1024)
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            import socket

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        writer.write(b"GET /api/v1/projects?watch=true&resourceVersion=0 HTTP/1.1\r\n"
                     b"Host: x\r\n\r\n")
        await stop.wait()
        writer.close()


async def stalled_head(host: str, port: int, stop: asyncio.Event) -> None:
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /api/v1/projects HTTP/1.1\r\nHost: x\r\n")
        stop_task = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stop_task, asyncio.ensure_future(reader.read())],
                           return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        writer.close()


async def flooder(base: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    blob = b"{" + b" " * (8 * 1024 * 1024) + b"}"

    async def chunks() -> Any:
        for _ in range(128):
            yield b" " * (64 * 1024)

    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            for data in (blob, chunks()):
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with s.post(f"{base}/api/v1/projects", data=data,
                                      headers={"Content-Type": "application/json"}) as r:
                        counts[str(r.status)] = counts.get(str(r.status), 0) + 1


def honest_process(base: str, stop: Any, out: Any) -> None:
    """The honest client, in its own process: the flood's event loop must not add its own
    delays to the figures."""
    latencies: list[float] = []
    errors: list[str] = []
    asyncio.run(honest(base, stop, latencies, errors))
    out.put((latencies, errors))


async def honest(base: str, stop: Any, latencies: list[float], errors: list[str]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                async with s.get(f"{base}/api/v1/projects/honest") as r:
                    await r.read()
                    if r.status != 200:
                        errors.append(str(r.status))
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(type(exc).__name__)
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.05)


async def run(base: str, pid: int, args: argparse.Namespace) -> None:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    async with aiohttp.ClientSession() as s, s.post(
        f"{base}/api/v1/projects", json=project("honest", False)
    ) as r:
        assert r.status == 201, await r.text()
    await asyncio.sleep(1)
    before = rss_mb(pid)
    print(f"server RSS before          {before:8.1f} MB")

    stop = asyncio.Event()
    honest_stop, honest_out = mp.Event(), mp.Queue()
    honest_proc = mp.Process(target=honest_process, args=(base, honest_stop, honest_out))
    honest_proc.start()
    counts: dict[str, int] = {}
    peak = before
    async with asyncio.TaskGroup() as tg:
        for _ in range(args.watchers):
            tg.create_task(slow_watcher(host, int(port), stop))
        for _ in range(args.idle):
            tg.create_task(stalled_head(host, int(port), stop))
        for _ in range(args.flooders):
            tg.create_task(flooder(base, stop, counts))

        async def writer() -> None:
            async with aiohttp.ClientSession() as s:
                for i in range(args.objects):
                    async with s.post(f"{base}/api/v1/projects",
                                      json=project(f"big-{i}", True)) as r:
                        counts[f"create {r.status}"] = counts.get(f"create {r.status}", 0) + 1
                for i in range(args.updates):
                    async with s.put(f"{base}/api/v1/projects/big-0",
                                     json=project("big-0", True, i)) as r:
                        counts[f"update {r.status}"] = counts.get(f"update {r.status}", 0) + 1

        written = tg.create_task(writer())
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline or not written.done():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.5)
        stop.set()
        honest_stop.set()
    latencies, errors = honest_out.get()
    honest_proc.join()
    await asyncio.sleep(5)
    after = rss_mb(pid)
    print(f"server RSS peak during     {peak:8.1f} MB")
    print(f"server RSS after (5 s)     {after:8.1f} MB   "
          f"(after - before: {after - before:+.1f} MB)")
    print(f"honest GETs                {len(latencies):8d}   errors: {len(errors)} "
          f"{sorted(set(errors))}")
    print(f"honest p50 / p99      {ms(pct(latencies, 50))} / {ms(pct(latencies, 99))}")
    print(f"flood responses            {dict(sorted(counts.items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("CARA_TEST_DATABASE_URL"))
    parser.add_argument("--tree", help="run the server of this source tree (PYTHONPATH)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--objects", type=int, default=40)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--flooders", type=int, default=8)
    args = parser.parse_args()
    with postgres(args.dsn) as admin, scratch_database(admin) as url, \
            tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        with server(url, args.tree, log_path) as (base, pid):
            print(f"cara-server {base} (pid {pid}), tree {args.tree or 'this'}")
            asyncio.run(run(base, pid, args))


if __name__ == "__main__":
    main()
