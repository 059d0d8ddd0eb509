#!/usr/bin/env python
"""The cluster benchmark: servers + hollow nodes + a project workload, and an SLO report.

    .venv/bin/python hack/bench/cluster.py --nodes 1000 --projects 10000 --servers 2
    .venv/bin/python hack/bench/cluster.py --nodes 50 --projects 500 --out /tmp/run1

It starts PostgreSQL (the test suite's embedded one, or ``--dsn``), ``--servers``
``cara-server`` processes on one scratch database (controllers elected among them by the
lease), and ``--nodes`` hollow nodes (``hack/sim/hollow-nodes``: the real agent over an
in-memory runtime) spread over the servers. Once every node is Ready it creates
``--projects`` projects at ``--rate``/s through the servers (round robin), waits until
all are Running, updates ``--update-share`` of them, deletes ``--delete-share`` of them,
and waits until the deleted ones are gone. A watch on the *last* server (B) observes
everything while writes go through all of them, so a create on server A is seen through
B's own LISTEN connection.

The SLIs, as Kubernetes defines its own (figures over successful requests):

* mutating API call latency p50/p99 (create, update, delete: send → response);
* project startup latency, create sent → ``Running`` observed on the watch, p50/p99/max;
* deletion latency, delete sent → ``DELETED`` observed on the watch, p50/p99;
* watch delivery lag, write acknowledged by server A → event received from server B (a
  lower bound, may be negative), and write sent → received (an upper bound), p50/p99;
* events lost (a created project never seen Running, a deleted one never seen gone) and
  duplicated (an event whose revision is not above the previous one): both must be 0;
* heartbeats processed per second (from the servers' /metrics), server CPU and RSS, and
  PostgreSQL connections (peak).

It writes ``cluster.json`` and two SVG pictures (``latency-cdf.svg``, ``timeline.svg``) to
``--out`` and prints a summary. Exit status 1 when the run is incorrect (lost or
duplicated events, projects not Running or not deleted in time). Everything listens on
127.0.0.1; every phase has a deadline (``--timeout``), so the run always ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CARA_SERVER, ROOT, free_port, pct, postgres, scratch_database, terminate

HOLLOW = str(ROOT / "hack" / "sim" / "hollow-nodes")


def project(name: str, seq: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "caravanserai/v1", "kind": "Project",
        "metadata": {"name": name, "labels": {"bench": "cluster"},
                     "annotations": {"bench/seq": str(seq)}},
        "spec": {"services": [{"name": "web", "image": "busybox:latest",
                               "command": ["httpd", "-f"]}]},
    }


# -- processes -------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path


def start_servers(dsn: str, count: int, workers: int | None, log_dir: Path) -> list[Server]:
    servers = []
    for i in range(count):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARA_")}
        # On loopback only, without tokens: anonymous requests act as admin, and the hollow
        # nodes join without a join token.
        env.update(DATABASE_URL=dsn, CARA_DB_POOL_SIZE="10", DEBUG="false",
                   CARA_INSECURE_ALLOW_ANONYMOUS="true",
                   CARA_HEARTBEAT_TIMEOUT=os.environ.get("CARA_HEARTBEAT_TIMEOUT", "90s"))
        command = [CARA_SERVER, "--host", "127.0.0.1", "--port", str(port)]
        if workers is not None:
            command += ["--workers", str(workers)]
        log = log_dir / f"server-{i}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=out,
                                    cwd=tempfile.gettempdir())
        servers.append(Server(proc, f"http://127.0.0.1:{port}", log))
    deadline = time.monotonic() + 60
    for s in servers:
        while '"listening"' not in s.log.read_text():
            if s.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"cara-server did not start: {s.log.read_text()[-2000:]}")
            time.sleep(0.1)
    return servers


def start_hollow(servers: list[Server], nodes: int, processes: int, args: argparse.Namespace,
                 log_dir: Path) -> list[subprocess.Popen[bytes]]:
    """One hollow-nodes program per server (nodes split evenly), ``processes`` in all."""
    procs = []
    per = [nodes // processes + (1 if i < nodes % processes else 0) for i in range(processes)]
    for i, n in enumerate(per):
        if n == 0:
            continue
        server = servers[i % len(servers)]
        log = open(log_dir / f"hollow-{i}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(
            [sys.executable, HOLLOW, "--server", server.base, "--nodes", str(n),
             "--prefix", f"hollow{i}", "--start-latency", str(args.start_latency),
             "--failure-rate", str(args.failure_rate),
             "--heartbeat-interval", str(args.heartbeat_interval)],
            stdout=log, stderr=subprocess.STDOUT,
        ))
    return procs


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of a process and its children (server workers)."""
    cpu, rss = 0.0, 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return cpu, rss


# -- the workload ----------------------------------------------------------------------------


@dataclass
class Observed:
    """What the watch on server B saw."""

    running: dict[str, float] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    received: dict[tuple[str, str], float] = field(default_factory=dict)  # (name, seq) -> t
    duplicates: int = 0
    events: int = 0
    restarts: int = 0
    last_rv: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)


SEQ_RE = re.compile(r'"bench/seq":"(\d+)"')


async def watch_projects(http: aiohttp.ClientSession, base: str, rv: str, seen: Observed,
                         stop: asyncio.Event) -> None:
    """Watch from ``rv`` on ``base`` until ``stop``; resume on a broken stream."""
    while not stop.is_set():
        params = {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true",
                  "labelSelector": "bench=cluster"}
        try:
            async with http.get(f"{base}/api/v1/projects", params=params,
                                timeout=aiohttp.ClientTimeout(total=None)) as resp:
                resp.raise_for_status()
                async for raw in resp.content:
                    now = time.monotonic()
                    if not raw.strip():
                        continue
                    ev = json.loads(raw)
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        raise SystemExit(f"watch ERROR: {obj}")
                    new_rv = int(obj["metadata"]["resourceVersion"])
                    rv = str(new_rv)
                    if ev["type"] == "BOOKMARK":
                        continue
                    if new_rv <= seen.last_rv:
                        seen.duplicates += 1
                    seen.last_rv = new_rv
                    seen.events += 1
                    name = obj["metadata"]["name"]
                    seq = (obj["metadata"].get("annotations") or {}).get("bench/seq", "0")
                    seen.received.setdefault((name, seq), now)
                    phase = (obj.get("status") or {}).get("phase")
                    if ev["type"] == "DELETED":
                        seen.deleted.setdefault(name, now)
                        seen.timeline.append((now, "deleted"))
                    elif phase == "Running" and name not in seen.running:
                        seen.running[name] = now
                        seen.timeline.append((now, "running"))
        except (TimeoutError, aiohttp.ClientError):
            seen.restarts += 1
            await asyncio.sleep(0.2)


@dataclass
class Calls:
    latency: list[float] = field(default_factory=list)
    sent: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)
    failed: dict[int, int] = field(default_factory=dict)


async def paced(total: int, rate: float, fn: Any) -> None:
    start = time.monotonic()
    tasks = []
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fn(i)))
    await asyncio.gather(*tasks)


async def call(http: aiohttp.ClientSession, method: str, url: str, key: str, calls: Calls,
               gate: asyncio.Semaphore, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)
               ) -> bool:
    async with gate:
        sent = time.monotonic()
        calls.sent[key] = sent
        for attempt in range(5):
            try:
                async with http.request(method, url, json=body,
                                        timeout=aiohttp.ClientTimeout(total=30)) as r:
                    await r.read()
                    status = r.status
            except (TimeoutError, aiohttp.ClientError):
                status = 599
            if status in ok:
                now = time.monotonic()
                calls.acked[key] = now
                calls.latency.append(now - sent)
                return True
            calls.failed[status] = calls.failed.get(status, 0) + 1
            if status not in (429, 503, 599) or attempt == 4:
                return False
            await asyncio.sleep(0.2 * (attempt + 1))
    return False


async def wait_until(cond: Any, within: float, what: str, step: float = 0.2) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await cond() if asyncio.iscoroutinefunction(cond) else cond():
            return True
        await asyncio.sleep(step)
    print(f"  timed out waiting for {what}", flush=True)
    return False


async def heartbeat_count(http: aiohttp.ClientSession, servers: list[Server]) -> float:
    total = 0.0
    for s in servers:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with http.get(f"{s.base}/metrics",
                                timeout=aiohttp.ClientTimeout(total=10)) as r:
                text = await r.text()
            for line in text.splitlines():
                if line.startswith("cara_http_requests_total{") and "heartbeat" in line:
                    total += float(line.rsplit(" ", 1)[1])
    return total


def pg_connections(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


async def workload(args: argparse.Namespace, dsn: str, servers: list[Server]
                   ) -> dict[str, Any]:
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        # Every node registered and Ready.
        async def nodes_ready() -> bool:
            try:
                async with http.get(f"{servers[0].base}/api/v1/nodes") as r:
                    if r.status != 200:  # e.g. 503 while a thousand agents register
                        return False
                    items = (await r.json())["items"]
            except (aiohttp.ClientError, TimeoutError):
                return False
            ready = sum((n.get("status") or {}).get("state") == "Ready" for n in items)
            ready_seen[0] = max(ready_seen[0], ready)
            return ready >= args.nodes

        ready_seen = [0]

        t0 = time.monotonic()
        if not await wait_until(nodes_ready, args.timeout, "nodes Ready", step=1.0):
            raise SystemExit(f"the hollow nodes did not become Ready (at most {ready_seen[0]} "
                             f"of {args.nodes} were)")
        print(f"  {args.nodes} nodes Ready after {time.monotonic() - t0:.1f} s", flush=True)

        b = servers[-1]
        async with http.get(f"{b.base}/api/v1/projects", params={"limit": "1"}) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        seen = Observed()
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_projects(http, b.base, rv, seen, stop))
        gate = asyncio.Semaphore(args.concurrency)
        names = [f"c{i:06d}" for i in range(args.projects)]
        creates, updates, deletes = Calls(), Calls(), Calls()
        cpu0 = [proc_stats(s.proc.pid)[0] for s in servers]
        hb0, hb_t0 = await heartbeat_count(http, servers), time.monotonic()
        peak_pg = pg_connections(dsn)
        start = time.monotonic()

        def via(i: int) -> str:
            return servers[i % len(servers)].base

        async def create(i: int) -> None:
            await call(http, "POST", f"{via(i)}/api/v1/projects", names[i], creates, gate,
                       project(names[i]))

        print(f"  creating {args.projects} projects at {args.rate:g}/s", flush=True)
        await paced(args.projects, args.rate, create)
        created = [n for n in names if n in creates.acked]
        peak_pg = max(peak_pg, pg_connections(dsn))
        all_running = await wait_until(
            lambda: all(n in seen.running for n in created), args.timeout, "all Running")
        running_at = time.monotonic()

        n_update = int(len(created) * args.update_share)

        async def update(i: int) -> None:
            name = created[i]
            await call(http, "PUT", f"{via(i)}/api/v1/projects/{name}", name, updates, gate,
                       project(name, 1))

        if n_update:
            print(f"  updating {n_update} projects", flush=True)
            await paced(n_update, args.rate, update)
            await wait_until(lambda: all((n, "1") in seen.received
                                         for n in created[:n_update] if n in updates.acked),
                             args.timeout, "updates observed")

        doomed = created[: int(len(created) * args.delete_share)]

        async def delete(i: int) -> None:
            name = doomed[i]
            await call(http, "DELETE", f"{via(i)}/api/v1/projects/{name}", name, deletes,
                       gate, ok=(200, 202, 204))

        print(f"  deleting {len(doomed)} projects", flush=True)
        await paced(len(doomed), args.rate, delete)
        peak_pg = max(peak_pg, pg_connections(dsn))
        all_deleted = await wait_until(lambda: all(n in seen.deleted for n in doomed),
                                       args.timeout, "all deleted")
        end = time.monotonic()
        hb1 = await heartbeat_count(http, servers)
        stats = [proc_stats(s.proc.pid) for s in servers]
        await asyncio.sleep(1.0)  # a late duplicate would show up here
        stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    startup = [seen.running[n] - creates.sent[n] for n in created if n in seen.running]
    deletion = [seen.deleted[n] - deletes.sent[n] for n in doomed
                if n in seen.deleted and n in deletes.sent]
    lag_upper = [seen.received[(n, "0")] - creates.sent[n] for n in created
                 if (n, "0") in seen.received]
    lag_lower = [seen.received[(n, "0")] - creates.acked[n] for n in created
                 if (n, "0") in seen.received]
    mutating = creates.latency + updates.latency + deletes.latency
    lost = sum(n not in seen.running for n in created) + \
        sum(n not in seen.deleted for n in doomed if n in deletes.acked)
    elapsed = end - start

    def q(values: list[float]) -> dict[str, float]:
        return {"p50": pct(values, 50), "p99": pct(values, 99),
                "max": max(values) if values else float("nan"), "n": len(values)}

    report = {
        "config": {"nodes": args.nodes, "projects": args.projects, "servers": len(servers),
                   "workers": args.workers, "rate": args.rate,
                   "heartbeat_interval": args.heartbeat_interval,
                   "start_latency": args.start_latency, "failure_rate": args.failure_rate,
                   "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "mutating_api_latency_s": q(mutating),
        "project_startup_latency_s": q(startup),
        "deletion_latency_s": q(deletion),
        "watch_lag_upper_s": q(lag_upper),
        "watch_lag_lower_s": q(lag_lower),
        "events_lost": lost,
        "events_duplicated": seen.duplicates,
        "watch_events": seen.events,
        "watch_restarts": seen.restarts,
        "failed_requests": {"create": creates.failed, "update": updates.failed,
                            "delete": deletes.failed},
        "created": len(created), "all_running": all_running,
        "deleted": len(doomed), "all_deleted": all_deleted,
        "heartbeats_per_s": (hb1 - hb0) / max(1e-9, time.monotonic() - hb_t0),
        "server_cpu_percent": [100 * (c - c0) / elapsed
                               for (c, _), c0 in zip(stats, cpu0, strict=True)],
        "server_rss_mb": [rss / 2**20 for _, rss in stats],
        "postgres_connections_peak": peak_pg,
        "seconds": {"total": elapsed, "create_to_running": running_at - start},
    }
    report["_series"] = {
        "startup": startup, "mutating": mutating, "deletion": deletion,
        "timeline": [(t - start, what) for t, what in seen.timeline],
        "creates": [(creates.acked[n] - start) for n in created],
    }
    return report


# -- pictures (hand-written SVG: no plotting dependency) --------------------------------------


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="12">'
            f'<rect width="100%" height="100%" fill="white"/>'
            f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>'
            + "".join(body) + "</svg>\n")


def _axes(x0: int, y0: int, w: int, h: int, xmax: float, xlabel: str, ymax: float,
          ylabel: str, log_x: bool = False) -> list[str]:
    out = [f'<line x1="{x0}" y1="{y0}" x2="{x0 + w}" y2="{y0}" stroke="black"/>',
           f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 - h}" stroke="black"/>',
           f'<text x="{x0 + w / 2}" y="{y0 + 32}" text-anchor="middle">{xlabel}</text>',
           f'<text x="{x0 - 40}" y="{y0 - h / 2}" text-anchor="middle" '
           f'transform="rotate(-90 {x0 - 40} {y0 - h / 2})">{ylabel}</text>']
    for k in range(6):
        fx = k / 5
        value = xmax ** fx if log_x else xmax * fx
        out.append(f'<text x="{x0 + w * fx}" y="{y0 + 15}" text-anchor="middle">'
                   f'{value:.3g}</text>')
        out.append(f'<text x="{x0 - 5}" y="{y0 - h * fx + 4}" text-anchor="end">'
                   f'{ymax * fx:.3g}</text>')
    return out


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _thin(points: list[str], limit: int = 600) -> str:
    """At most about ``limit`` points of a polyline (the plot is 560 px wide), the last kept."""
    step = max(1, len(points) // limit)
    kept = points[::step]
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return " ".join(kept)


def cdf_svg(series: dict[str, list[float]]) -> str:
    x0, y0, w, h = 70, 340, 560, 290
    values = [v for s in series.values() for v in s if v > 0]
    xmax = max(values) * 1.05 if values else 1.0
    body = _axes(x0, y0, w, h, xmax, "latency (s)", 1.0, "fraction ≤ x")
    for k, (label, data) in enumerate(series.items()):
        data = sorted(v for v in data if v == v)
        if not data:
            continue
        pts = _thin([f"{x0 + w * max(0.0, v) / xmax:.1f},{y0 - h * (i + 1) / len(data):.1f}"
                     for i, v in enumerate(data)])
        colour = COLOURS[k % len(COLOURS)]
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                    f'points="{pts}"/>')
        body.append(f'<text x="{x0 + w - 5}" y="{y0 - h + 15 * k}" text-anchor="end" '
                    f'fill="{colour}">{label} (p99 {pct(data, 99):.3f} s)</text>')
    return _svg(680, 390, body, "Latency CDF")


def timeline_svg(report: dict[str, Any]) -> str:
    x0, y0, w, h = 70, 340, 560, 290
    series: dict[str, list[float]] = {"created": sorted(report["_series"]["creates"]),
                                      "running": [], "deleted": []}
    for t, what in report["_series"]["timeline"]:
        series[what].append(t)
    tmax = max((v for s in series.values() for v in s), default=1.0) * 1.02 or 1.0
    ymax = max((len(s) for s in series.values()), default=1) or 1
    body = _axes(x0, y0, w, h, tmax, "time since first create (s)", ymax, "projects")
    for k, (label, times) in enumerate(series.items()):
        times = sorted(times)
        if not times:
            continue
        pts = _thin([f"{x0 + w * t / tmax:.1f},{y0 - h * (i + 1) / ymax:.1f}"
                     for i, t in enumerate(times)])
        colour = COLOURS[k % len(COLOURS)]
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                    f'points="{pts}"/>')
        body.append(f'<text x="{x0 + 10}" y="{y0 - h + 15 * k}" fill="{colour}">'
                    f'{label} (cumulative)</text>')
    return _svg(680, 390, body, "Timeline")


def summary(r: dict[str, Any]) -> str:
    def line(label: str, key: str, fields: tuple[str, ...] = ("p50", "p99")) -> str:
        q = r[key]
        return f"  {label:<34}" + "  ".join(f"{f} {q[f] * 1000:8.1f} ms" for f in fields) \
            + f"  (n={q['n']})"

    cfg = r["config"]
    return "\n".join([
        f"cluster: {cfg['nodes']} hollow nodes, {cfg['projects']} projects, "
        f"{cfg['servers']} server(s), {cfg['cpus']} CPUs, load average "
        f"{cfg['load_average'][0]:.1f} at the end",
        line("mutating API call latency", "mutating_api_latency_s"),
        line("project startup (create→Running)", "project_startup_latency_s",
             ("p50", "p99", "max")),
        line("deletion (delete→gone)", "deletion_latency_s"),
        line("watch lag, ack on A→recv on B", "watch_lag_lower_s"),
        line("watch lag, send to A→recv on B", "watch_lag_upper_s"),
        f"  events lost {r['events_lost']}, duplicated {r['events_duplicated']} "
        f"({r['watch_events']} events, {r['watch_restarts']} watch restarts)",
        f"  all Running: {r['all_running']} ({r['created']}), all deleted: "
        f"{r['all_deleted']} ({r['deleted']}); failed requests {r['failed_requests']}",
        f"  heartbeats processed {r['heartbeats_per_s']:.1f}/s; server CPU "
        + ", ".join(f"{c:.0f}%" for c in r["server_cpu_percent"]) + " of one core; RSS "
        + ", ".join(f"{m:.0f} MB" for m in r["server_rss_mb"])
        + f"; PostgreSQL connections (peak) {r['postgres_connections_peak']}",
        f"  run: {r['seconds']['total']:.1f} s from first create to last deletion",
    ])


def correct(r: dict[str, Any]) -> bool:
    return bool(r["all_running"] and r["all_deleted"] and r["events_lost"] == 0
                and r["events_duplicated"] == 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("CARA_TEST_DATABASE_URL"))
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--projects", type=int, default=500)
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None,
                        help="cara-server --workers (processes per server)")
    parser.add_argument("--hollow-processes", type=int, default=None,
                        help="hollow-nodes programs (default: one per server)")
    parser.add_argument("--rate", type=float, default=100.0, help="writes per second")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--update-share", type=float, default=0.2)
    parser.add_argument("--delete-share", type=float, default=1.0)
    parser.add_argument("--start-latency", type=float, default=0.0)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--heartbeat-interval", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline of each phase")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cara-cluster-"))
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs"
    log_dir.mkdir(exist_ok=True)
    hollow: list[subprocess.Popen[bytes]] = []
    servers: list[Server] = []
    with postgres(args.dsn) as admin, scratch_database(admin) as dsn:
        try:
            servers = start_servers(dsn, args.servers, args.workers, log_dir)
            hollow = start_hollow(servers, args.nodes, args.hollow_processes or args.servers,
                                  args, log_dir)
            report = asyncio.run(workload(args, dsn, servers))
        finally:
            for p in hollow:
                terminate(p)
            for s in servers:
                terminate(s.proc)
    series = report.pop("_series")
    (out / "cluster.json").write_text(json.dumps(report, indent=2) + "\n")
    report["_series"] = series
    (out / "latency-cdf.svg").write_text(cdf_svg({
        "startup": series["startup"], "mutating API": series["mutating"],
        "deletion": series["deletion"]}))
    (out / "timeline.svg").write_text(timeline_svg(report))
    print(summary(report))
    print(f"  written: {out / 'cluster.json'}, latency-cdf.svg, timeline.svg (logs in {log_dir})")
    print(f"  verdict: {'correct' if correct(report) else 'INCORRECT'}")
    sys.exit(0 if correct(report) else 1)


if __name__ == "__main__":
    main()
