"""The contract between controllers and whoever runs them (the controller manager, or a
standalone program).

A controller is published as an entry point of the group ``caravanserai.controllers``
whose object is a factory: ``controller(ctx: ControllerContext) -> RunnableController``.
The manager builds one :class:`ControllerContext` per controller (sharing one
:class:`InformerFactory`), calls every factory, then runs the informers and every
controller's ``run()`` — see :func:`run_controllers`. The same factory runs out of process
with :meth:`ControllerContext.over_http`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import structlog

from caravanserai.api.event import Event
from caravanserai.api.node import Node
from caravanserai.api.project import Project
from caravanserai.client.interface import Client
from caravanserai.client.options import ListOptions
from caravanserai.informer.cache import IndexFunc
from caravanserai.informer.clock import Clock, RealClock
from caravanserai.informer.informer import SharedInformer
from caravanserai.informer.listerwatcher import ClientListerWatcher, ListerWatcher

__all__ = [
    "ENTRY_POINT_GROUP",
    "ControllerContext",
    "ControllerFactory",
    "InformerFactory",
    "ListerWatcherFactory",
    "RunnableController",
    "run_controllers",
]

T = TypeVar("T", bound=Project | Node | Event)

ENTRY_POINT_GROUP = "caravanserai.controllers"


class ListerWatcherFactory(Protocol):
    """Makes the ListerWatcher of one model and selection."""

    def __call__(self, model: type[T], options: ListOptions) -> ListerWatcher[T]: ...


class RunnableController(Protocol):
    """What a controller factory returns: something to run until cancelled."""

    async def run(self) -> None:
        """Run until cancelled (wait for informers to sync first)."""
        ...


class InformerFactory:
    """Shared informers: one per (model, selection), however many controllers ask.

    ::

        informers = InformerFactory.over_client(client)   # HTTP or in-process client
        projects = informers.projects()                      # SharedInformer[Project]
        pending = informers.projects(ListOptions.of(phase="Pending"))
        nodes = informers.nodes(indexers={"state": index_by_state})

    Informers asked for before ``run()`` start with it; later ones start at once.
    Indexers given for an existing informer are added to it.
    """

    def __init__(
        self,
        lw_factory: ListerWatcherFactory,
        *,
        clock: Clock | None = None,
        resync_period: float | None = None,
        liveness_timeout: float = 90.0,
    ) -> None:
        self._lw_factory = lw_factory
        self.clock: Clock = clock or RealClock()
        self.resync_period = resync_period
        self.liveness_timeout = liveness_timeout
        self._informers: dict[tuple[type, ListOptions], SharedInformer[Any]] = {}
        self._tg: asyncio.TaskGroup | None = None

    @classmethod
    def over_client(cls, client: Client, **kwargs: Any) -> InformerFactory:
        """Informers that list and watch through ``client`` (HTTP or in-process)."""

        def make(model: type[T], options: ListOptions) -> ListerWatcher[T]:
            return ClientListerWatcher(client.resource(model), options)

        return cls(make, **kwargs)

    over_http = over_client
    """The same, under the name it had when only the HTTP client existed."""


    def informer(
        self,
        model: type[T],
        options: ListOptions | None = None,
        *,
        indexers: Mapping[str, IndexFunc[T]] | None = None,
    ) -> SharedInformer[T]:
        """The shared informer of ``model`` (``Project``/``Node``) with this selection."""
        options = options or ListOptions()
        key = (model, options)
        informer = self._informers.get(key)
        if informer is None:
            informer = SharedInformer(
                self._lw_factory(model, options),
                clock=self.clock,
                resync_period=self.resync_period,
                liveness_timeout=self.liveness_timeout,
            )
            self._informers[key] = informer
            if self._tg is not None:
                self._tg.create_task(informer.run())
        if indexers:
            informer.add_indexers(indexers)
        return cast(SharedInformer[T], informer)

    def projects(
        self,
        options: ListOptions | None = None,
        *,
        indexers: Mapping[str, IndexFunc[Project]] | None = None,
    ) -> SharedInformer[Project]:
        """The shared Project informer with this selection."""
        return self.informer(Project, options, indexers=indexers)

    def nodes(
        self,
        options: ListOptions | None = None,
        *,
        indexers: Mapping[str, IndexFunc[Node]] | None = None,
    ) -> SharedInformer[Node]:
        """The shared Node informer with this selection."""
        return self.informer(Node, options, indexers=indexers)

    @property
    def informers(self) -> list[SharedInformer[Any]]:
        """Every informer created so far."""
        return list(self._informers.values())

    async def run(self) -> None:
        """Run every informer (present and future) until cancelled."""
        if self._tg is not None:
            raise RuntimeError("InformerFactory is already running")
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for informer in self._informers.values():
                    tg.create_task(informer.run())
                # Keep the group open for informers created later.
                tg.create_task(asyncio.Event().wait())
        finally:
            self._tg = None

    async def wait_for_sync(self) -> None:
        """Wait until every informer created so far has synced."""
        for informer in list(self._informers.values()):
            await informer.wait_for_sync()


@dataclass
class ControllerContext:
    """Everything a controller factory gets.

    Attributes:
        name: the controller's name (its entry point name).
        client: the API client (:class:`~caravanserai.client.interface.Client`);
            controllers write through it and the server's registry validates every write
            and enforces the phase machine. Inside cara-server it is the in-process client
            on the registry; in a program of its own, the HTTP client.
        informers: the shared informer factory over the same client.
        clock: the time source; use it for every timer so tests can drive time.
        config: this controller's settings (e.g. timeouts), from the manager's config.
        log: a structlog logger bound with ``controller=name``.
    """

    name: str
    client: Client
    informers: InformerFactory
    clock: Clock = field(default_factory=RealClock)
    config: Mapping[str, Any] = field(default_factory=dict)
    log: Any = None

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = structlog.get_logger("caravanserai.controllers").bind(
                controller=self.name
            )

    @classmethod
    def over_http(
        cls,
        name: str,
        client: Client,
        *,
        clock: Clock | None = None,
        config: Mapping[str, Any] | None = None,
        informers: InformerFactory | None = None,
    ) -> ControllerContext:
        """A context for a controller running as its own program against a server."""
        clock = clock or RealClock()
        return cls(
            name,
            client,
            informers or InformerFactory.over_client(client, clock=clock),
            clock,
            dict(config or {}),
        )


ControllerFactory = Callable[[ControllerContext], RunnableController]
"""The type of an entry point object in the ``caravanserai.controllers`` group."""


async def run_controllers(
    informers: InformerFactory, controllers: Iterable[RunnableController]
) -> None:
    """Run the informers and every controller until cancelled (or one fails)."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(informers.run(), name="informers")
        for controller in controllers:
            tg.create_task(controller.run(), name=f"controller-{type(controller).__name__}")
