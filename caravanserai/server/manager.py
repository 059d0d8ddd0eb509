"""The controller manager of cara-server: plug-in controllers, run by the leader only.

Controllers are found through the entry-point group ``caravanserai.controllers`` (the
built-ins are declared in ``pyproject.toml``; a third party's package declares its own the
same way). Each entry point is a factory ``controller(ctx: ControllerContext)`` returning
something with ``async run()``.

Several cara-server replicas may share one database; every replica runs a manager, and a
:class:`~caravanserai.informer.LeaderElector` on the ``controller-manager`` Lease object
decides which one runs the controllers. On winning the lease the manager builds a fresh
:class:`InformerFactory` over the in-process client (list/watch from the server's own
store and watch hub, no HTTP) and runs every
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
Through the in-process client (:class:`~caravanserai.server.inprocess.InProcessClient`):
the same interface as the HTTP ``CaravanseraiClient``, implemented on the server's registry
(:mod:`caravanserai.registry`), which holds every rule a write must obey — the phase
machine, the resourceVersion precondition, what a delete means, status validation — once,
for HTTP requests and controllers alike. No socket, no JSON, no HTTP round trip per write;
a controller module still runs unchanged as its own program over HTTP
(``ControllerContext.over_http``).

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
import functools
import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, cast

from aiohttp import web

from caravanserai.api.config import parse_duration
from caravanserai.client.interface import Client
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
from caravanserai.server.config import ConfigError
from caravanserai.server.inprocess import InProcessClient
from caravanserai.server.state import CONFIG, REGISTRIES
from caravanserai.store.postgres import reserved_connection

__all__ = [
    "MANAGER",
    "ControllerManager",
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


class ControllerManager:
    """Runs the given controllers while this process holds the leader lease.

    Args:
        client: how controllers read, watch and write, and how the lease is held (the
            in-process client in cara-server; any client of the interface works).
        factories: controller name → factory (from :func:`discover_controllers`).
        settings: selection and leader-election timings.
        clock: the controllers' clock (``ctx.clock``); FakeClock in tests.
        informer_clock: the informers' clock (kept real in tests that fake the controllers'
            time, so watch liveness timers are not fired by a test's time jumps).
        identity: this candidate's identity in the lease table (default host-pid-random).
        lease_client: how the lease is held, when not through ``client`` (cara-server
            renews it over the store's reserved connection).
    """

    def __init__(
        self,
        client: Client,
        factories: Mapping[str, ControllerFactory],
        settings: ManagerSettings | None = None,
        *,
        clock: Clock | None = None,
        informer_clock: Clock | None = None,
        identity: str | None = None,
        lease_client: Client | None = None,
    ) -> None:
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
            lease_client or client,
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
            self.build(InformerFactory.over_client(self.client, clock=self.informer_clock))
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
        informers = InformerFactory.over_client(self.client, clock=self.informer_clock)
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


class _ReservedCalls:
    """``inner``'s coroutine methods, each run on the store's reserved connection."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        async def call(*args: Any, **kwargs: Any) -> Any:
            with reserved_connection():
                return await attr(*args, **kwargs)

        return call


class _ReservedLeases:
    """The elector's client: its lease reads and writes never queue behind the requests of
    a busy server for a pooled connection (``PostgresStore.reserved_connection``)."""

    def __init__(self, client: InProcessClient) -> None:
        self.leases = _ReservedCalls(client.leases)


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
        client = InProcessClient(
            app[REGISTRIES], bookmark_interval=app[CONFIG].bookmark_interval
        )
        manager = ControllerManager(
            client,
            factories,
            settings,
            clock=clock,
            informer_clock=informer_clock,
            identity=identity,
            lease_client=cast(Client, _ReservedLeases(client)),
        )
        try:
            await manager.start()
            app[MANAGER] = manager
            yield
        finally:
            await manager.stop()

    return run_manager
