"""Run controller factories as a program of their own, against a server over HTTP.

::

    python -m caravanserai.informer.run mypkg.labels:controller --server http://cara:8080
    python -m caravanserai.informer.run examples/controller/label_syncer.py:controller

or from Python: ``await run_standalone([controller], server=...)``. It does what every
out-of-process controller needs and nobody should copy: the client, one shared
:class:`InformerFactory` for every factory given, structured logging on stderr (watch events
are debug lines, off by default), optional leader election, ``/healthz`` and ``/metrics`` on
``--health-port``, and a clean, logged shutdown on SIGINT and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from caravanserai.client.http import CaravanseraiClient
from caravanserai.informer.leader import LeaderElector
from caravanserai.informer.manager_api import (
    ControllerContext,
    ControllerFactory,
    InformerFactory,
    run_controllers,
)
from caravanserai.logging import configure_logging

__all__ = ["FactoryError", "load_factory", "main", "run_standalone"]

log = structlog.get_logger("caravanserai.informer.run")

LEVELS = ("debug", "info", "warning", "error")


class FactoryError(ValueError):
    """A ``module:attribute`` reference that does not name a controller factory."""


def load_factory(ref: str) -> tuple[str, ControllerFactory]:
    """Import ``package.module:attr`` or ``path/to/file.py:attr``; returns (name, factory).

    The name (logs, metrics, ``ctx.name``) is the module's last part with ``-`` for ``_``.
    """
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise FactoryError(f"{ref!r}: expected module:factory (e.g. mypkg.labels:controller)")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise FactoryError(f"{ref!r}: no such file {module_name}")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
            short = path.stem
        else:
            module = importlib.import_module(module_name)
            short = module_name.rpartition(".")[2]
    except ImportError as exc:
        raise FactoryError(f"{ref!r}: cannot import {module_name}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise FactoryError(f"{ref!r}: {module_name} has no callable {attr!r}")
    return short.replace("_", "-"), factory


async def _serve_health(host: str, port: int, informers: InformerFactory) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        # Healthy once every cache holds its first list: before that the controller acts
        # on nothing, and a probe should not route traffic or count it as started.
        pending = [i.kind for i in informers.informers if not i.has_synced]
        if pending:
            return web.Response(status=503, text=f"informers not synced: {', '.join(pending)}\n")
        return web.Response(text="ok\n")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_standalone(
    factories: Sequence[ControllerFactory | str | tuple[str, ControllerFactory]],
    *,
    server: str,
    token: str | None = None,
    workers: int | None = None,
    config: Mapping[str, Any] | None = None,
    leader_elect: bool = False,
    lease_name: str | None = None,
    health_port: int | None = None,
    health_host: str = "127.0.0.1",
) -> None:
    """Run controller factories against ``server`` until cancelled.

    Args:
        factories: factories, ``module:attr`` references or ``(name, factory)`` pairs; they
            share one informer factory (one watch per kind and selection).
        workers: if set, ``ctx.config["workers"]`` of every controller.
        config: the rest of every controller's ``ctx.config``.
        leader_elect: only run while holding the Lease ``lease_name`` (default: the first
            controller's name), elected over the same API (``/api/v1/leases``).
        health_port: serve ``/healthz`` and ``/metrics`` on ``health_host:health_port``.
    """
    named: list[tuple[str, ControllerFactory]] = []
    for f in factories:
        if isinstance(f, str):
            named.append(load_factory(f))
        elif isinstance(f, tuple):
            named.append(f)
        else:
            named.append((getattr(f, "__name__", type(f).__name__).replace("_", "-"), f))
    if not named:
        raise FactoryError("no controller factory given")
    settings = dict(config or {})
    if workers is not None:
        settings["workers"] = workers

    async with CaravanseraiClient(server, token=token) as client:

        async def work() -> None:
            informers = InformerFactory.over_http(client)
            runnables = [
                factory(
                    ControllerContext.over_http(name, client, config=settings, informers=informers)
                )
                for name, factory in named
            ]
            health = (
                await _serve_health(health_host, health_port, informers) if health_port else None
            )
            log.info("controllers starting", controllers=[n for n, _ in named], server=server)
            try:
                await run_controllers(informers, runnables)
            finally:
                if health is not None:
                    await health.cleanup()

        if leader_elect:
            elector = LeaderElector(
                client, on_started_leading=work, name=lease_name or named[0][0]
            )
            await elector.run()
        else:
            await work()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m caravanserai.informer.run",
        description="Run controller factories (module:attr) against a Caravanserai server.",
    )
    parser.add_argument(
        "factories",
        nargs="+",
        metavar="MODULE:FACTORY",
        help="e.g. mypkg.labels:controller or path/to/file.py:controller",
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("CARA_SERVER", "http://localhost:8080"),
        help="server URL [env CARA_SERVER; default http://localhost:8080]",
    )
    parser.add_argument(
        "--token", default=os.environ.get("CARA_TOKEN"), help="bearer token [env CARA_TOKEN]"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="concurrent reconciles per controller"
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="run only while holding a Lease (over the API), so several copies can run",
    )
    parser.add_argument("--lease-name", default=None, help="default: the first controller's name")
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=os.environ.get("CARA_LOG_LEVEL", "info"),
        help="debug shows every watch event [env CARA_LOG_LEVEL; default info]",
    )
    parser.add_argument(
        "--health-port", type=int, default=None, help="serve /healthz and /metrics on this port"
    )
    parser.add_argument(
        "--health-host", default="127.0.0.1", help="address for --health-port [127.0.0.1]"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0 after SIGINT/SIGTERM)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    configure_logging(debug=args.log_level == "debug", app="caravanserai-controller")
    logging.getLogger().setLevel(args.log_level.upper())
    try:
        named = [load_factory(ref) for ref in args.factories]
    except FactoryError as exc:
        parser.error(str(exc))

    async def amain() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def stop(signum: signal.Signals) -> None:
            log.info("shutting down", signal=signum.name)
            task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop, signum)
        try:
            await run_standalone(
                named,
                server=args.server,
                token=args.token,
                workers=args.workers,
                leader_elect=args.leader_elect,
                lease_name=args.lease_name,
                health_port=args.health_port,
                health_host=args.health_host,
            )
        except asyncio.CancelledError:
            log.info("stopped")

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
