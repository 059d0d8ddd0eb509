"""``cara-server``: the control-plane API server (the controller manager joins in issue 4).

Startup is all-or-nothing and quiet on failure: a missing ``DATABASE_URL``, a bad setting,
an unreachable PostgreSQL or a busy port ends the program with exit status 1 and exactly
one line on stderr (no traceback, no half-written log). Once listening it logs ``listening``
with the address; SIGTERM/SIGINT shut it down gracefully: listeners close, open watches
end cleanly, in-flight requests get ``shutdown_timeout`` seconds to finish, the store
closes. A second signal during shutdown aborts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import psycopg
from aiohttp import web

import caravanserai
from caravanserai.connections import (
    ConnectionLimits,
    LimitedAppRunner,
    install_accept_error_limiter,
    raise_file_limit,
)
from caravanserai.logging import configure_logging, get_logger
from caravanserai.server.app import CleanupContext, create_app
from caravanserai.server.bootstrap import ensure_bootstrap_token
from caravanserai.server.config import (
    ConfigError,
    ServerConfig,
    load_config,
    redact_url,
    require_database_url,
)
from caravanserai.server.manager import controller_manager
from caravanserai.server.memory import return_freed_memory
from caravanserai.server.tracing import setup_tracing
from caravanserai.tls import TLSConfigError, client_context, server_context

if TYPE_CHECKING:
    from caravanserai.store.hub import HubLimits
    from caravanserai.store.postgres import PostgresStore

log = get_logger("caravanserai.server")
PROG = "cara-server"


class StartupError(Exception):
    """The server cannot start; the message is the one line the user sees."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def hub_limits(config: ServerConfig) -> HubLimits:
    """The watch hub's bounds from the server configuration."""
    from caravanserai.store.hub import HubLimits

    return HubLimits(
        ring_bytes=config.watch_cache_bytes,
        watcher_bytes=config.watch_queue_bytes,
        future_wait=config.watch_future_wait,
        read_linger=config.watch_linger,
    )


async def open_store(config: ServerConfig) -> PostgresStore:
    """Connect to PostgreSQL (schema applied, watch hub started) or raise StartupError."""
    from caravanserai.store.postgres import PostgresStore

    url = require_database_url(config)
    where = redact_url(url)
    try:
        async with asyncio.timeout(config.connect_timeout + 5):
            # One direct connection first: a refused or misconfigured server then fails at
            # once with the driver's own reason, instead of the pool retrying until its
            # timeout and reporting only "pool initialization incomplete".
            probe = await psycopg.AsyncConnection.connect(
                url, connect_timeout=max(1, int(config.connect_timeout)), application_name=PROG
            )
            await probe.close()
            return await PostgresStore.open(
                url,
                pool_min=2,
                pool_max=config.db_pool_size,
                retention_events=config.event_retention,
                retention_age=timedelta(seconds=config.event_retention_age),
                compaction_interval=config.compaction_interval,
                connect_timeout=config.connect_timeout,
                application_name=PROG,
                hub_limits=hub_limits(config),
                listen_dsn=config.listen_database_url,
            )
    except TimeoutError:
        raise StartupError(
            f"cannot connect to PostgreSQL at {where}: no answer within "
            f"{config.connect_timeout:g}s"
        ) from None
    except Exception as exc:
        # Driver messages can repeat the DSN, password included: never echo it.
        reason = _one_line(exc).replace(url, where)
        if config.database_url and "@" in url:
            password = url.split("@", 1)[0].rsplit(":", 1)[-1]
            if password and "//" not in password:
                reason = reason.replace(password, "***")
        raise StartupError(f"cannot connect to PostgreSQL at {where}: {reason}") from None


class _Hold(logging.Filter):
    """Holds log records back during startup: on failure only the one line is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def _our_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_caravanserai", False)]


class HeldLogs:
    """Holds every log line back until :meth:`release` (startup succeeded); :meth:`drop`
    discards them (startup failed: the user sees one line, not a half-written log)."""

    def __init__(self) -> None:
        self._hold = _Hold()
        self._handlers = _our_handlers()
        for handler in self._handlers:
            handler.addFilter(self._hold)
        self._done = False

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        for handler in self._handlers:
            handler.removeFilter(self._hold)
            for record in self._hold.records:
                handler.handle(record)

    def drop(self) -> None:
        if self._done:
            return
        self._done = True
        for handler in self._handlers:
            handler.removeFilter(self._hold)


async def serve(
    config: ServerConfig,
    *,
    extra_startup: Sequence[CleanupContext] = (),
    started: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    reuse_port: bool = False,
    sigint: bool = True,
) -> None:
    """Run the server until SIGTERM/SIGINT (or ``stop`` is set); raise StartupError early.

    ``extra_startup`` is passed to :func:`create_app` (the controller manager's hook);
    ``started`` is called once the server listens. ``handle_signals=False`` leaves the
    signals to the caller, which then sets ``stop`` (``--dev`` stops its agent first).
    ``reuse_port`` shares the port with other workers (``--workers``, SO_REUSEPORT);
    ``sigint=False`` leaves Ctrl-C to a supervisor.
    """
    return_freed_memory()
    stop = stop or asyncio.Event()
    if not handle_signals:
        await _serve(config, stop, [], extra_startup, started, reuse_port)
        log.info("shutdown.complete")
        return
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        if len(received) > 1:
            log.warning("shutdown.aborted", signal=sig.name)
            raise SystemExit(1)  # escapes the loop: the second signal means "now"
        stop.set()

    # Installed before anything else: a SIGTERM that arrives while starting (e.g. right
    # after "listening") must mean "shut down gracefully", not the default instant death.
    signals = (signal.SIGTERM, signal.SIGINT) if sigint else (signal.SIGTERM,)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await _serve(config, stop, received, extra_startup, started, reuse_port)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    log.info("shutdown.complete")


async def _serve(
    config: ServerConfig,
    stop: asyncio.Event,
    received: list[str],
    extra_startup: Sequence[CleanupContext],
    started: Callable[[], None] | None,
    reuse_port: bool = False,
) -> None:
    try:
        ssl_context = server_context(config.tls_cert_file, config.tls_key_file)
        client_context(config.agent_ca)  # checked now: a bad CA file is a startup error
    except TLSConfigError as exc:
        raise StartupError(str(exc)) from None
    tracing_middleware, stop_tracing = setup_tracing(config.otel_collector_url)
    store = await open_store(config)
    runner: web.AppRunner | None = None
    try:
        bootstrap_token = await ensure_bootstrap_token(config, store)
        app = create_app(config, store, extra_startup=extra_startup)
        if tracing_middleware is not None:
            app.middlewares.insert(0, tracing_middleware)
        install_accept_error_limiter(asyncio.get_running_loop())
        raise_file_limit(config.max_connections + 1024)  # + pool, watches' own, logs
        runner = LimitedAppRunner(
            app,
            limits=ConnectionLimits(
                header_timeout=config.header_timeout,
                idle_timeout=config.idle_timeout,
                max_connections=config.max_connections,
            ),
            what="cara-server",
            handle_signals=False,
            shutdown_timeout=config.shutdown_timeout,
            access_log=None,  # our middleware logs each request (with its duration)
        )
        await runner.setup()
        site = web.TCPSite(
            runner, config.host, config.port, ssl_context=ssl_context,
            reuse_port=reuse_port or None,
        )
        try:
            await site.start()
        except OSError as exc:
            # asyncio's message repeats the address; the errno's text is enough.
            reason = os.strerror(exc.errno) if exc.errno else _one_line(exc)
            raise StartupError(
                f"cannot listen on {config.host}:{config.port}: {reason.lower()}"
            ) from None
        if started is not None:
            started()
        addresses = [_format_address(a) for a in runner.addresses]
        log.info(
            # A --workers worker: the supervisor says "listening" once all of them are.
            "worker.listening" if reuse_port else "listening",
            address=addresses[0] if addresses else f"{config.host}:{config.port}",
            addresses=addresses,
            version=caravanserai.__version__,
            database=config.redacted_database_url,
        )
        for warning in config.warnings:
            log.warning("config.warning", message=warning)
        if config.insecure_allow_anonymous:
            log.warning(
                "auth.anonymous_allowed",
                message="--insecure-allow-anonymous: every request without a token acts as "
                "admin; anyone who reaches this address controls the cluster",
                address=f"{config.host}:{config.port}",
            )
        if bootstrap_token is not None:
            show_bootstrap_token(bootstrap_token)

        await stop.wait()
        log.info("shutdown.started", signal=received[0] if received else None)
        await runner.cleanup()
        runner = None
    finally:
        if runner is not None:
            await runner.cleanup()
        await store.close()
        stop_tracing()


def show_bootstrap_token(token: str) -> None:
    """Shown once, on stderr, when the first start created the admin token."""
    click.echo(
        "cara-server: created the admin token \"bootstrap-admin\" (shown only this once).\n"
        "Use it with caractrl (or keep it safe and create tokens for people and nodes):\n"
        f"    caractrl config set-token {token}",
        err=True,
    )


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _workers_flag(value: str | None) -> int | None:
    from caravanserai.server.workers import parse_workers

    if value is None:
        return None
    try:
        return parse_workers(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--workers'") from None


@click.command(name=PROG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default=None, help="Address to listen on [env HOST; default 0.0.0.0].")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port to listen on [env PORT; default 8080].")
@click.option("--database-url", default=None,
              help="PostgreSQL DSN [env DATABASE_URL; required].")
@click.option("--debug/--no-debug", default=None, help="Verbose logging [env DEBUG].")
@click.option("--otel-collector-url", default=None,
              help="OTLP gRPC endpoint for traces [env OTEL_COLLECTOR_URL].")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="YAML settings file [default ./config.yaml].")
@click.option("--env-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="dotenv file [default ./.env].")
@click.option("--insecure-allow-anonymous", is_flag=True, default=None,
              help="Serve requests without a token as admin (warned at every start) "
              "[env CARA_INSECURE_ALLOW_ANONYMOUS].")
@click.option("--tls-cert-file", default=None,
              help="Serve HTTPS with this PEM certificate (chain) [env CARA_TLS_CERT_FILE].")
@click.option("--tls-key-file", default=None,
              help="The certificate's PEM key [env CARA_TLS_KEY_FILE].")
@click.option("--dev", is_flag=True,
              help="Run a complete single-node cluster: embedded PostgreSQL (unless "
              "DATABASE_URL is set), this server on 127.0.0.1, and a local cara-agent "
              "(joined by the server); caractrl gets a fresh admin token in its config.")
@click.option("--node-name", default=None,
              help="With --dev: the local node's name [env NODE_NAME; default hostname].")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="With --dev: the embedded PostgreSQL's data directory [env CARA_DATA_DIR; "
              "default in the user data directory].")
@click.option("--workers", default=None, metavar="N|auto",
              help="Server processes sharing the port, to use several cores [env "
              "CARA_WORKERS; default 1; auto: one per CPU; not with --dev].")
@click.option("-v", "--verbose", is_flag=True,
              help="With --dev: stream the server's, the agent's and PostgreSQL's logs to the "
              "terminal as well as to their files.")
@click.version_option(caravanserai.__version__, prog_name=PROG)
def main(
    host: str | None,
    port: int | None,
    database_url: str | None,
    debug: bool | None,
    otel_collector_url: str | None,
    config_file: Path | None,
    env_file: Path | None,
    insecure_allow_anonymous: bool | None,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    dev: bool,
    node_name: str | None,
    data_dir: Path | None,
    workers: str | None,
    verbose: bool,
) -> None:
    """The Caravanserai control-plane API server.

    Settings come from flags, then the environment, then .env, then config.yaml (in the
    working directory), then defaults.

    Every request but the probes needs a bearer token: the first start on an empty
    database creates an admin token and prints it once (CARA_BOOTSTRAP_TOKEN to choose it).

    `cara-server --dev` brings up a whole single-node cluster for trying Caravanserai out.
    """
    flags = {
        "host": host,
        "port": port,
        "database_url": database_url,
        "debug": debug,
        "otel_collector_url": otel_collector_url,
        "workers": _workers_flag(workers),
        "insecure_allow_anonymous": insecure_allow_anonymous,
        "tls_cert_file": tls_cert_file,
        "tls_key_file": tls_key_file,
    }
    if not dev and (node_name is not None or data_dir is not None or verbose):
        click.echo(f"{PROG}: --node-name, --data-dir and -v only apply with --dev", err=True)
        sys.exit(2)
    try:
        config = load_config(flags, config_file=config_file, env_file=env_file)
        if not dev:
            require_database_url(config)
    except ConfigError as exc:
        click.echo(f"{PROG}: {exc}", err=True)
        sys.exit(1)
    if dev:
        if config.workers != 1:
            click.echo(f"{PROG}: --workers does not apply with --dev (one process)", err=True)
            sys.exit(2)
        _main_dev(config, node_name, data_dir, verbose)
        return
    configure_logging(debug=config.debug, app=PROG)
    if config.workers > 1:
        from caravanserai.server.workers import run_workers

        sys.exit(run_workers(config, config.workers))
    held = HeldLogs()
    try:
        # The controller manager (issue 4): CARA_CONTROLLERS etc. are read here, so a bad
        # setting is one line on stderr before anything starts.
        managers = [controller_manager()]
        asyncio.run(serve(config, extra_startup=managers, started=held.release))
    except (StartupError, ConfigError) as exc:
        held.drop()
        click.echo(f"{PROG}: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # a signal before the handlers were installed
        sys.exit(130)
    finally:
        held.release()  # e.g. a crash after startup: keep whatever was logged


def _main_dev(
    config: ServerConfig, node_name: str | None, data_dir: Path | None, verbose: bool
) -> None:
    """``--dev``: the same one-line failures as the plain server (caravanserai.server.dev)."""
    from caravanserai.server.dev import (
        DevError,
        DevOptions,
        dev_logs,
        run_dev,
        setup_dev_logging,
    )

    if data_dir is None and (env_dir := os.environ.get("CARA_DATA_DIR")):
        data_dir = Path(env_dir)
    options = DevOptions(node_name=node_name or None, data_dir=data_dir, verbose=verbose)
    logs = dev_logs(options)
    try:
        setup_dev_logging(logs, debug=config.debug, app=PROG)
    except OSError as exc:
        click.echo(f"{PROG} --dev: cannot write logs to {logs.directory}: "
                   f"{exc.strerror or exc}", err=True)
        sys.exit(1)
    held = HeldLogs()
    if not verbose:
        held.release()  # a file keeps everything, a failed start included
    try:
        # As below: a bad CARA_CONTROLLERS is one line before anything starts.
        managers = [controller_manager()]
        code = asyncio.run(
            run_dev(config, options, extra_startup=managers, on_started=held.release, logs=logs)
        )
    except (DevError, StartupError, ConfigError) as exc:
        held.drop()
        click.echo(f"{PROG} --dev: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # a signal before the handlers were installed
        sys.exit(130)
    finally:
        held.release()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
