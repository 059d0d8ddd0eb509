"""``cara-server --workers N``: N server processes sharing one port, to use every core.

A Python process serves from one core; the API and the watch fan-out are CPU-bound, so
one machine's cores are used by several *workers*, each a complete server: its own event
loop, connection pool, LISTEN connection and watch hub (so a write through one worker is
seen by watches on every worker, exactly as between replicas), and its own controller
manager candidate — the existing leader lease elects one among all workers and replicas.

The port is shared with ``SO_REUSEPORT``: the supervisor (this process) binds it first
without listening, which fixes the port (also for ``--port 0``) and keeps it reserved;
each worker binds the same address and listens, and the kernel spreads new connections
over the workers. The supervisor forwards SIGTERM/SIGINT to every worker (each shuts
down gracefully, ending its watch streams cleanly) and exits when they have; a worker that
dies on its own takes the others down (exit 1) rather than leaving a server that silently
has fewer cores. ``/metrics`` from any worker shows the sum over all workers (Prometheus
client's multiprocess mode: counters and histograms summed, open watches summed over live
workers, the revision their maximum).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import replace
from typing import Any

import click

from caravanserai.logging import configure_logging, get_logger
from caravanserai.server.config import ServerConfig

log = get_logger("caravanserai.server")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def parse_workers(text: str) -> int:
    """``auto`` (the number of CPUs) or a positive integer."""
    value = text.strip().lower()
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    try:
        n = int(value)
    except ValueError:
        raise ValueError("must be a positive integer or auto") from None
    if n < 1:
        raise ValueError("must be a positive integer or auto")
    return n


def _reserve(host: str, port: int) -> tuple[socket.socket, int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    bind_host = "" if host in ("0.0.0.0", "") else host
    try:
        sock.bind((bind_host, port))
    except OSError as exc:
        sock.close()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(f"cannot listen on {host}:{port}: {reason.lower()}") from None
    return sock, int(sock.getsockname()[1])


def _worker(config: ServerConfig, index: int, ready: Any) -> None:
    """One worker: a complete server on the shared port."""
    import asyncio

    import structlog

    from caravanserai.server.main import PROG, StartupError, serve
    from caravanserai.server.manager import controller_manager

    configure_logging(debug=config.debug, app=PROG)
    structlog.contextvars.bind_contextvars(worker=index)
    # The supervisor handles Ctrl-C for the group: a worker only obeys its SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        managers = [controller_manager()]
        asyncio.run(serve(config, extra_startup=managers, started=lambda: ready.put(index),
                          reuse_port=True, sigint=False))
    except StartupError as exc:
        click.echo(f"{PROG}: {exc}", err=True)
        sys.exit(1)


def run_workers(config: ServerConfig, workers: int) -> int:
    """Run ``workers`` server processes on ``config.host:config.port``; the exit code."""
    try:
        holder, port = _reserve(config.host, config.port)
    except OSError as exc:
        click.echo(f"cara-server: {exc}", err=True)
        return 1
    config = replace(config, port=port)
    metrics_dir = tempfile.mkdtemp(prefix="cara-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # inherited by the (spawned) workers
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(config, i, ready), name=f"cara-worker-{i}")
             for i in range(workers)]
    stopping: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if stopping:
            return
        stopping.append(signal.Signals(signum).name)
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for p in procs:
            p.start()
        started = 0
        while started < workers and not stopping:
            with contextlib.suppress(Exception):
                ready.get(timeout=0.2)
                started += 1
                continue
            if any(p.exitcode is not None for p in procs):
                on_signal(signal.SIGTERM, None)
                stopping.append("failed")
        if started == workers:
            log.info("listening", address=f"{config.host}:{port}", workers=workers,
                     pids=[p.pid for p in procs])
        failed = bool(stopping and stopping[-1] == "failed")
        while any(p.exitcode is None for p in procs):
            for p in procs:
                p.join(timeout=0.2)
                if p.exitcode is not None and p.exitcode != 0 and not stopping:
                    log.error("worker.died", worker=p.name, exit_code=p.exitcode)
                    failed = True
                    on_signal(signal.SIGTERM, None)
        _mark_dead(procs)
        if stopping and stopping[0] != "failed":
            log.info("shutdown.complete", workers=workers)
        return 1 if failed or any(p.exitcode not in (0, None) for p in procs) else 0
    finally:
        holder.close()
        for p in procs:
            if p.exitcode is None and p.pid is not None:
                p.kill()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)


def _mark_dead(procs: list[Any]) -> None:
    from prometheus_client import multiprocess

    for p in procs:
        if p.pid is not None:
            with contextlib.suppress(Exception):
                multiprocess.mark_process_dead(p.pid)


__all__ = ["parse_workers", "run_workers"]
