"""``cara-agent``: the node agent.

Runs, each in its own task: the heartbeat (from the first second), the project informer
(``fieldSelector=status.nodeRef=<node>``), the reconcile workers, the Docker event watcher,
the orphan sweeper, the agent HTTP server (logs, port-forward) and the ingress proxy.
SIGTERM/SIGINT stop all of them cleanly; containers keep running (the agent is stateless
and adopts them when it comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import click
import structlog
from aiohttp import web

from agent import naming
from agent.agent_api import AgentAPI
from agent.config import AgentConfig, ConfigError, load_config
from agent.desired import HostPolicy
from agent.docker_runtime import DockerRuntime
from agent.fake_runtime import FakeRuntime
from agent.identity import JoinError, obtain_identity
from agent.node import NodeAgent, gather_facts
from agent.proxy import IngressProxy, RouteTable
from agent.reconciler import ProjectReconciler, ReconcilerSettings
from agent.runtime import EngineUnavailable, Runtime
from agent.sweeper import Sweeper, watch_container_events
from caravanserai.api import Project
from caravanserai.api.ingress import ingress_domain
from caravanserai.client import CaravanseraiClient, ListOptions
from caravanserai.connections import (
    ConnectionLimits,
    LimitedAppRunner,
    install_accept_error_limiter,
    raise_file_limit,
)
from caravanserai.informer.controller import Controller
from caravanserai.informer.informer import SharedInformer
from caravanserai.informer.listerwatcher import HTTPListerWatcher
from caravanserai.informer.recorder import EventRecorder
from caravanserai.logging import configure_logging
from caravanserai.tls import TLSConfigError, client_context, server_context

log = structlog.get_logger("agent")

SHUTDOWN_TIMEOUT = 5.0


class StartupError(Exception):
    """The agent cannot start (a port is taken, ...); told as one line."""


@dataclass
class Agent:
    """The wired-up agent (exposed for tests that run it in-process)."""

    config: AgentConfig
    runtime: Runtime
    client: CaravanseraiClient
    node: NodeAgent
    informer: SharedInformer[Project]
    controller: Controller[str]
    reconciler: ProjectReconciler
    sweeper: Sweeper
    routes: RouteTable


def make_resolver(runtime: Runtime) -> Callable[[str, str], Awaitable[str | None]]:
    async def resolve(project: str, service: str) -> str | None:
        try:
            info = await runtime.inspect_container(naming.container_name(project, service))
        except EngineUnavailable:
            return None
        if info is None or info.state != "running":
            return None
        return info.ips.get(naming.network_name(project)) or next(iter(info.ips.values()), None)

    return resolve


def connection_limits(config: AgentConfig) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout=config.header_timeout,
        idle_timeout=config.idle_timeout,
        max_connections=config.max_connections,
    )


async def _start_site(
    app: web.Application, host: str, port: int, what: str, limits: ConnectionLimits,
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    runner = LimitedAppRunner(app, limits=limits, what=what, handle_signals=False,
                              access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True,
                          ssl_context=ssl_context).start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot listen on {host}:{port} for the {what}: {exc}") from exc
    log.info("listening", what=what, address=f"{host}:{port}")
    return runner


def _bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


def make_runtime(config: AgentConfig) -> DockerRuntime | FakeRuntime:
    """The container engine ``config.runtime`` names: Docker, or in-memory (hollow node)."""
    if config.runtime == "fake":
        return FakeRuntime(start_latency=config.fake_start_latency,
                           failure_rate=config.fake_failure_rate)
    return DockerRuntime(config.docker_host, pull_timeout=config.pull_timeout)


async def run_agent(
    config: AgentConfig,
    *,
    started: asyncio.Event | None = None,
    runtime: Runtime | None = None,
    session: aiohttp.ClientSession | None = None,
    heartbeat_session: aiohttp.ClientSession | None = None,
    serve: bool = True,
) -> None:
    """Run the agent until cancelled.

    Hollow nodes (``hack/sim/hollow-nodes``) run many agents in one event loop: they pass
    their ``runtime``, share the HTTP ``session``s and do not ``serve`` the agent API and
    ingress proxy (thousands of listeners would load the machine, not the control plane).
    """
    advertise_ip = config.advertise_address()
    node_name = config.node_name
    log.info("starting cara-agent", node=node_name, server=config.server_url,
             docker=config.docker_host, runtime=config.runtime, advertise_ip=advertise_ip)
    runners: list[web.AppRunner] = []
    try:
        server_ssl = client_context(config.server_ca)
        api_ssl = server_context(config.tls_cert_file, config.tls_key_file)
    except TLSConfigError as exc:
        raise StartupError(str(exc)) from None
    try:
        identity = await obtain_identity(
            server=config.server_url, node=node_name, data_dir=config.data_dir,
            bootstrap_token=config.join_token or config.token, ssl_context=server_ssl,
        )
    except JoinError as exc:
        raise StartupError(str(exc)) from None
    async with contextlib.AsyncExitStack() as stack:
        engine: Runtime = (
            runtime if runtime is not None
            else await stack.enter_async_context(make_runtime(config))
        )
        client = await stack.enter_async_context(
            CaravanseraiClient(config.server_url, token=identity.credential,
                               ssl_context=server_ssl, session=session)
        )
        # The heartbeat has a session of its own: a busy pool never delays it.
        hb_client = await stack.enter_async_context(
            CaravanseraiClient(
                config.server_url,
                token=identity.credential,
                timeout=max(2.0, min(10.0, config.heartbeat_interval)),
                ssl_context=server_ssl,
                session=heartbeat_session,
            )
        )
        facts = await gather_facts(
            engine,
            advertise_ip=advertise_ip,
            # Port 0 (an ephemeral port, as in tests) is reported once it is bound.
            agent_port=config.listen_port or None,
            proxy_port=config.proxy_port or None,
            engine_deadline=3.0,
            reserved=config.system_reserved,
            ingress_domain=ingress_domain(config.environment, config.base_domain),
        )
        node = NodeAgent(hb_client, node_name, facts, interval=config.heartbeat_interval,
                         healthy=engine.ping)

        routes = RouteTable()
        # Events (Pulled, Started, BackOff, Unhealthy, ...) go out in the background; what
        # is still queued at shutdown gets a few seconds before the client closes.
        recorder = EventRecorder(client, "cara-agent", node_name)
        stack.push_async_callback(recorder.aclose)
        informer: SharedInformer[Project] = SharedInformer(
            HTTPListerWatcher(
                client.projects, ListOptions.of(field_selector=f"status.nodeRef={node_name}")
            ),
            resync_period=300.0,
        )
        reconciler = ProjectReconciler(
            settings=ReconcilerSettings(
                node=node_name,
                environment=config.environment,
                base_domain=config.base_domain,
                stop_timeout=config.stop_timeout,
                restart_backoff=config.restart_backoff,
                restart_backoff_max=30 * config.restart_backoff,
                restart_backoff_reset=60 * config.restart_backoff,
                policy=HostPolicy(
                    reserved_ports=frozenset({config.listen_port, config.proxy_port}),
                    min_host_port=config.min_host_port,
                    low_port_projects=frozenset(config.low_port_projects),
                    default_memory_bytes=config.default_memory,
                    default_pids_limit=config.default_pids_limit,
                ),
            ),
            runtime=engine,
            client=client,
            projects=informer,
            routes=routes,
            recorder=recorder,
        )
        controller: Controller[str] = Controller(
            "cara-agent",
            reconciler,
            workers=config.workers,
            kind="Project",
            reconcile_timeout=config.pull_timeout + 4 * (config.stop_timeout + 30),
        )
        controller.watch(informer)
        sweeper = Sweeper(engine, informer, controller.enqueue, node=node_name,
                          interval=config.sweep_interval)

        def requeue_everything() -> None:
            for project in informer.list():
                controller.enqueue(project.metadata.name)
            sweeper.trigger()

        proxy = IngressProxy(
            routes,
            make_resolver(engine),
            max_body_bytes=config.proxy_max_body_bytes,
            trust_forwarded=config.proxy_trust_forwarded,
        )
        # Only the server's relay may call it, with this node's own secret.
        api = AgentAPI(engine, node_name, token=identity.agent_secret,
                       ws_max_message_bytes=config.ws_max_message_bytes)
        try:
            # Binding is immediate; doing it first makes a taken port a clean startup error.
            if serve:
                install_accept_error_limiter(asyncio.get_running_loop())
                raise_file_limit(2 * config.max_connections + 1024)
                runners.append(
                    await _start_site(api.app, config.listen_host or advertise_ip,
                                      config.listen_port, "agent API", connection_limits(config),
                                      ssl_context=api_ssl)
                )
                runners.append(
                    await _start_site(proxy.app, config.proxy_host, config.proxy_port,
                                      "ingress proxy", connection_limits(config))
                )
                # What the server must connect to: the ports actually bound (0 picks one).
                bound_api, bound_proxy = (_bound_port(r) for r in runners[-2:])
                node.facts = dataclasses.replace(facts, network=facts.network.model_copy(
                    update={"agent_port": bound_api, "proxy_port": bound_proxy}))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(node.run(), name="heartbeat")
                tg.create_task(informer.run(), name="project-informer")
                tg.create_task(controller.run(), name="reconciler")
                tg.create_task(sweeper.run(), name="sweeper")
                tg.create_task(
                    watch_container_events(
                        engine, node=node_name, enqueue=controller.enqueue,
                        on_reconnect=requeue_everything,
                    ),
                    name="docker-events",
                )
                if started is not None:
                    started.set()
        finally:
            log.info("stopping cara-agent (containers keep running)")
            for runner in reversed(runners):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                        await runner.cleanup()


async def _main(config: AgentConfig) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stop_signal: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stop_signal:
            stop_signal.append(sig.name)
            log.info("signal received; shutting down", signal=sig.name)
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await run_agent(config)
    except asyncio.CancelledError:
        if not stop_signal:
            raise
        return 0
    except StartupError as exc:
        click.echo(f"cara-agent: {exc}", err=True)
        return 1
    return 0


def _flag(name: str, *decls: str, **kwargs: Any) -> Callable[[Any], Any]:
    return click.option(*decls, name, default=None, show_default=False, **kwargs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_flag("debug", "--debug/--no-debug", help="Verbose logs (DEBUG).")
@_flag("server_url", "--server-url", help="cara-server URL (SERVER_URL).")
@_flag("node_name", "--node-name", help="This node's name (NODE_NAME; default hostname).")
@_flag("heartbeat_interval", "--heartbeat-interval", help="e.g. 30s (HEARTBEAT_INTERVAL).")
@_flag("docker_host", "--docker-host", help="Docker endpoint (DOCKER_HOST).")
@_flag("listen_host", "--agent-host",
       help="Agent API bind address (AGENT_LISTEN_HOST; default the advertise address).")
@_flag("listen_port", "--agent-port", help="Agent API port (AGENT_LISTEN_PORT, 9090).")
@_flag("proxy_listen_addr", "--proxy-listen-addr", help="Ingress (PROXY_LISTEN_ADDR, :8081).")
@_flag("advertise_ip", "--advertise-ip", help="Address the server reaches this agent at.")
@_flag("environment", "--environment", help="Ingress host environment (CARA_ENVIRONMENT).")
@_flag("base_domain", "--base-domain", help="Ingress base domain (CARA_BASE_DOMAIN).")
@_flag("workers", "--workers", help="Projects reconciled at once (AGENT_WORKERS, 4).")
@_flag("stop_timeout", "--stop-timeout", help="Container stop grace (AGENT_STOP_TIMEOUT).")
@_flag("restart_backoff", "--restart-backoff",
       help="First restart delay of a crashing service, doubling to 30x "
            "(AGENT_RESTART_BACKOFF, default 10s).")
@_flag("system_reserved", "--system-reserved",
       help="Kept from projects' requests, e.g. cpu=0.5,memory=1Gi (AGENT_SYSTEM_RESERVED).")
@_flag("pull_timeout", "--pull-timeout", help="Image pull deadline (AGENT_PULL_TIMEOUT).")
@_flag("sweep_interval", "--sweep-interval", help="Orphan sweep period (AGENT_SWEEP_INTERVAL).")
@_flag("token", "--token", help="An admin token to join with (CARA_TOKEN; prefer --join-token).")
@_flag("join_token", "--join-token", help="Join token, used once (CARA_JOIN_TOKEN).")
@_flag("data_dir", "--data-dir", help="Where the node credential is kept (AGENT_DATA_DIR).")
@_flag("server_ca", "--server-ca", help="CA file to verify an https server (CARA_SERVER_CA).")
@_flag("tls_cert_file", "--tls-cert-file",
       help="Serve the agent API over HTTPS with this PEM certificate (AGENT_TLS_CERT_FILE).")
@_flag("tls_key_file", "--tls-key-file", help="The certificate's PEM key (AGENT_TLS_KEY_FILE).")
@_flag("runtime", "--runtime", help="Container engine: docker, or fake for a hollow node "
       "that runs nothing (AGENT_RUNTIME).")
@_flag("fake_start_latency", "--fake-start-latency",
       help="With --runtime=fake: time a container takes to start (AGENT_FAKE_START_LATENCY).")
@_flag("fake_failure_rate", "--fake-failure-rate",
       help="With --runtime=fake: share of starts that fail, 0-1 (AGENT_FAKE_FAILURE_RATE).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="config.yaml to read (default ./config.yaml).")
@click.option("--env-file", "env_file", type=click.Path(path_type=Path), default=None,
              help=".env to read (default ./.env).")
@click.option("--check-config", is_flag=True, default=False,
              help="Only validate the configuration and print the API and ingress proxy "
                   'addresses as JSON ({"listen": ..., "proxy": ...}).')
def cli(
    config_file: Path | None, env_file: Path | None, check_config: bool, **flags: Any
) -> None:
    """Run the Caravanserai node agent."""
    try:
        config = load_config(flags=flags, config_file=config_file, env_file=env_file)
    except ConfigError as exc:
        click.echo(f"cara-agent: configuration error: {exc}", err=True)
        sys.exit(2)
    if check_config:
        # cara-server --dev asks this of the agent program instead of importing it.
        click.echo(json.dumps({
            "listen": f"{config.listen_host}:{config.listen_port}",
            "proxy": f"{config.proxy_host}:{config.proxy_port}",
        }))
        return
    configure_logging(debug=config.debug, app="cara-agent")
    sys.exit(asyncio.run(_main(config)))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
