"""The controller manager of cara-server: plug-in controllers, run by the leader only.

Controllers are found through the entry-point group ``caravanserai.controllers`` (the
built-ins are declared in ``pyproject.toml``; a third party's package declares its own the
same way). Each entry point is a factory ``controller(ctx: ControllerContext)`` returning
something with ``async run()``.

Several cara-server replicas may share one database; every replica runs a manager, and a
:class:`~caravanserai.informer.LeaderElector` lease on PostgreSQL decides which one runs the
controllers. On winning the lease the manager builds a fresh :class:`InformerFactory` over
the store (in-process list/watch from the server's own watch hub, no HTTP) and runs every
enabled controller; on losing it everything is cancelled and the caches are dropped, so a
later term starts from a fresh list. A leader that stops cleanly releases the lease (the
next replica takes over within ``retry_period``); one that dies is replaced once its lease
expires (``lease_duration`` + ``retry_period``).

There is no fencing token: a write already in flight when a leader steps down may still
commit. It cannot do harm twice: every controller write carries the resourceVersion its
decision was based on, so the next leader's write on the same object is a 409, not a
second assignment.

How controllers write
---------------------
Through the HTTP API, always: ``ctx.client`` is a :class:`CaravanseraiClient`. In-process
it talks to a private copy of this server's own application (``create_app`` on the same
store) served on a local Unix socket (see :class:`InternalAPI`). So there is exactly ONE
implementation of every rule a write must obey — the phase machine, the resourceVersion
precondition, what a delete means, status validation — the server's request handlers, and
a controller makes byte-for-byte the same requests whether it runs in here or as its own
program (``ControllerContext.over_http``). The Unix socket is not reachable from the
network, needs no port, and does not depend on the public address (``0.0.0.0``, port 0 in
tests, a load balancer in front). The cost is one local HTTP round trip per write.

Configuration (environment; see also ``controllers/settings.py`` for the controllers' own):

| variable | default | meaning |
|---|---|---|
| ``CARA_CONTROLLERS`` | ``*`` | which controllers run (below) |
| ``CARA_LEADER_LEASE_DURATION`` | 15 s | how long a lease lasts without renewal |
| ``CARA_LEADER_RENEW_DEADLINE`` | 10 s | a leader that could not renew for this long steps down |
| ``CARA_LEADER_RETRY_PERIOD`` | 2 s | how often candidates try / the leader renews |

``CARA_CONTROLLERS`` is a comma-separated list: ``*`` = every installed controller, ``name``
adds one, ``-name`` removes one (``*,-gc``); ``none`` (or nothing selected) runs no manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import aiohttp
from aiohttp import web

from caravanserai.api.config import parse_duration
from caravanserai.client.http import CaravanseraiClient
from caravanserai.informer import (
    ENTRY_POINT_GROUP,
    Clock,
    ControllerContext,
    ControllerFactory,
    InformerFactory,
    LeaderElector,
    RealClock,
    RunnableController,
    run_controllers,
)
from caravanserai.logging import get_logger
from caravanserai.server.config import ConfigError, ServerConfig
from caravanserai.server.state import CONFIG, STORE
from caravanserai.store.types import Store

__all__ = [
    "MANAGER",
    "ControllerManager",
    "InternalAPI",
    "ManagerSettings",
    "controller_manager",
    "discover_controllers",
    "select_controllers",
]

log = get_logger("caravanserai.server.manager")

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _seconds(name: str, text: str) -> float:
    return parse_duration(text, name)


@dataclass(frozen=True)
class ManagerSettings:
    """What the manager runs and how it elects its leader.

    Attributes:
        controllers: selection over the installed entry points (``*``, ``name``, ``-name``).
        lease_name: replicas campaigning for the same name compete.
        lease_duration, renew_deadline, retry_period: the leader election's timings.
        release_on_stop: release the lease when stopping (fast hand-over). Tests turn it
            off to stand for a crashed leader.
        controller_config: per controller name, the ``ctx.config`` mapping it receives
            (values there beat the environment).
    """

    controllers: tuple[str, ...] = ("*",)
    lease_name: str = "controller-manager"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_stop: bool = True
    controller_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ManagerSettings:
        """Read ``CARA_CONTROLLERS`` and ``CARA_LEADER_*`` (ConfigError when invalid)."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        if (spec := env.get("CARA_CONTROLLERS")) is not None:
            kwargs["controllers"] = tuple(p.strip() for p in spec.split(",") if p.strip())
        for attr, var in (
            ("lease_duration", "CARA_LEADER_LEASE_DURATION"),
            ("renew_deadline", "CARA_LEADER_RENEW_DEADLINE"),
            ("retry_period", "CARA_LEADER_RETRY_PERIOD"),
        ):
            if text := env.get(var, "").strip():
                kwargs[attr] = _seconds(var, text)
        settings = cls(**kwargs)
        if not settings.lease_duration > settings.renew_deadline > settings.retry_period:
            raise ConfigError(
                "leader election needs CARA_LEADER_LEASE_DURATION > "
                "CARA_LEADER_RENEW_DEADLINE > CARA_LEADER_RETRY_PERIOD"
            )
        return settings


def select_controllers(available: Iterable[str], spec: Sequence[str]) -> list[str]:
    """The names ``spec`` selects among ``available``, sorted.

    ``*`` adds every available one, ``name`` adds one, ``-name`` removes one; ``none`` (or an
    empty spec) selects nothing. Naming a controller that is not installed is a ConfigError:
    a typo must not silently disable the scheduler.
    """
    known = sorted(set(available))
    chosen: set[str] = set()
    for item in spec:
        if item.lower() == "none":
            continue
        name = item.removeprefix("-")
        if name != "*" and name not in known:
            raise ConfigError(
                f"CARA_CONTROLLERS names unknown controller {name!r} "
                f"(installed: {', '.join(known) or 'none'})"
            )
        names = set(known) if name == "*" else {name}
        if item.startswith("-"):
            chosen -= names
        else:
            chosen |= names
    return sorted(chosen)


def discover_controllers(
    selection: Sequence[str], group: str = ENTRY_POINT_GROUP
) -> dict[str, ControllerFactory]:
    """Load the selected controllers' factories from the entry-point group.

    Only the selected entry points are imported, so a broken plug-in that is not enabled
    cannot stop the server; one that is enabled and fails to import is a ConfigError.
    """
    found = {ep.name: ep for ep in entry_points(group=group)}
    factories: dict[str, ControllerFactory] = {}
    for name in select_controllers(found, selection):
        try:
            factory = found[name].load()
        except Exception as exc:
            raise ConfigError(
                f"controller {name!r} ({found[name].value}) cannot be loaded: {exc}"
            ) from exc
        if not callable(factory):
            raise ConfigError(f"controller {name!r} ({found[name].value}) is not callable")
        factories[name] = factory
    return factories


class InternalAPI:
    """This server's API on a local Unix socket, and a client for it (see module doc).

    On Linux the socket lives in the abstract namespace: it has no file, so a server killed
    with SIGKILL leaves nothing behind. Elsewhere it is a file in a private (0700) temporary
    directory, removed on stop. Either way it is not reachable over the network.
    """

    def __init__(self, config: ServerConfig, store: Store) -> None:
        self._config = config
        self._store = store
        self._runner: web.AppRunner | None = None
        self._dir: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self.client: CaravanseraiClient | None = None

    async def start(self) -> CaravanseraiClient:
        """Serve and connect; returns the client."""
        # Imported here: app.py may one day import this module to register the manager.
        from caravanserai.server.app import create_app

        app = create_app(self._config, self._store)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        path = self._socket_path()
        await web.UnixSite(self._runner, path).start()
        self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path))
        self.client = CaravanseraiClient(
            "http://cara-server.internal",
            session=self._session,
            token=self._config.api_token,
            timeout=self._config.request_timeout + 5,
        )
        return self.client

    def _socket_path(self) -> str:
        name = f"cara-api-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        if sys.platform.startswith("linux"):
            return "\0" + name
        # mkdtemp creates the directory 0700: only this user can reach the socket.
        self._dir = tempfile.mkdtemp(prefix="cara-api-")
        return os.path.join(self._dir, "api.sock")

    async def stop(self) -> None:
        """Disconnect and stop serving."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class ControllerManager:
    """Runs the given controllers while this process holds the leader lease.

    Args:
        store: the server's store (informers list and watch it in-process).
        conninfo: PostgreSQL DSN for the lease.
        client: how controllers write (the internal API client in cara-server).
        factories: controller name → factory (from :func:`discover_controllers`).
        settings: selection and leader-election timings.
        clock: the controllers' clock (``ctx.clock``); FakeClock in tests.
        informer_clock: the informers' clock (kept real in tests that fake the controllers'
            time, so watch liveness timers are not fired by a test's time jumps).
        identity: this candidate's identity in the lease table (default host-pid-random).
    """

    def __init__(
        self,
        store: Store,
        conninfo: str,
        client: CaravanseraiClient,
        factories: Mapping[str, ControllerFactory],
        settings: ManagerSettings | None = None,
        *,
        clock: Clock | None = None,
        informer_clock: Clock | None = None,
        identity: str | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.factories = dict(factories)
        self.settings = settings or ManagerSettings()
        self.clock: Clock = clock or RealClock()
        self.informer_clock: Clock = informer_clock or RealClock()
        self.terms = 0
        """How many times this manager started leading (for tests and logs)."""
        self.informers: InformerFactory | None = None
        """The current term's informers (None while not leading)."""
        self.controllers: dict[str, RunnableController] = {}
        """The current term's controllers by name (empty while not leading)."""
        self.elector = LeaderElector(
            conninfo,
            on_started_leading=self._lead,
            name=self.settings.lease_name,
            identity=identity,
            lease_duration=self.settings.lease_duration,
            renew_deadline=self.settings.renew_deadline,
            retry_period=self.settings.retry_period,
            release_on_cancel=self.settings.release_on_stop,
        )
        self._task: asyncio.Task[None] | None = None
        self._log = log.bind(identity=self.elector.identity)

    @property
    def identity(self) -> str:
        """This manager's identity in the lease."""
        return self.elector.identity

    @property
    def is_leader(self) -> bool:
        """True while this manager holds the lease and runs the controllers."""
        return self.elector.is_leader

    def build(self, informers: InformerFactory) -> dict[str, RunnableController]:
        """Call every factory with its context (registers informers and handlers)."""
        controllers: dict[str, RunnableController] = {}
        for name, factory in sorted(self.factories.items()):
            ctx = ControllerContext(
                name,
                self.client,
                informers,
                self.clock,
                dict(self.settings.controller_config.get(name, {})),
            )
            controllers[name] = factory(ctx)
        return controllers

    def check(self) -> None:
        """Build every controller once, unrun, so that a bad setting stops the server at
        startup (one line) instead of failing each time this replica becomes leader."""
        try:
            self.build(InformerFactory.over_store(self.store, clock=self.informer_clock))
        except Exception as exc:
            raise ConfigError(f"controller manager: {exc}") from exc

    async def start(self) -> None:
        """Campaign for the lease in the background."""
        if self._task is not None:
            return
        self.check()
        self._log.info("controller_manager.starting", controllers=sorted(self.factories))
        self._task = asyncio.create_task(self.elector.run(), name="controller-manager")

    async def stop(self) -> None:
        """Stop the controllers and leave the election (releasing the lease if configured)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._log.info("controller_manager.stopped")

    async def _lead(self) -> None:
        self.terms += 1
        informers = InformerFactory.over_store(self.store, clock=self.informer_clock)
        controllers = self.build(informers)
        self._log.info(
            "controller_manager.leading", term=self.terms, controllers=sorted(controllers)
        )
        self.informers, self.controllers = informers, controllers
        try:
            await run_controllers(informers, controllers.values())
        finally:
            self.informers, self.controllers = None, {}


MANAGER = web.AppKey("controller_manager", ControllerManager)


def controller_manager(
    settings: ManagerSettings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    factories: Mapping[str, ControllerFactory] | None = None,
    clock: Clock | None = None,
    informer_clock: Clock | None = None,
    identity: str | None = None,
) -> CleanupContext:
    """The cleanup context that runs the manager with a cara-server app::

        create_app(config, store, extra_startup=[controller_manager()])

    Settings default to the environment; factories to the installed entry points. Both are
    resolved now, so configuration errors surface before the server starts. The running
    manager is ``app[MANAGER]`` (absent when no controller is enabled).
    """
    settings = settings or ManagerSettings.from_env(environ)
    if factories is None:
        factories = discover_controllers(settings.controllers)

    async def run_manager(app: web.Application) -> AsyncIterator[None]:
        if not factories:
            log.info("controller_manager.disabled", reason="no controller enabled")
            yield
            return
        config, store = app[CONFIG], app[STORE]
        conninfo = config.database_url or getattr(store, "dsn", None)
        if not conninfo:
            raise ConfigError("the controller manager needs DATABASE_URL for leader election")
        internal = InternalAPI(config, store)
        client = await internal.start()
        manager = ControllerManager(
            store,
            conninfo,
            client,
            factories,
            settings,
            clock=clock,
            informer_clock=informer_clock,
            identity=identity,
        )
        try:
            await manager.start()
            app[MANAGER] = manager
            yield
        finally:
            await manager.stop()
            await internal.stop()

    return run_manager
