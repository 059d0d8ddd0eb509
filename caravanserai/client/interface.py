"""The client interface every controller, informer and leader elector is written against.

Two implementations: :class:`~caravanserai.client.http.CaravanseraiClient` (REST over
HTTP, for agents, tools and controllers running as their own program) and
``caravanserai.server.inprocess.InProcessClient`` (the same calls straight on the server's
registry, for the controller manager inside ``cara-server``: no socket, no serialisation).
Code that only uses what is declared here runs unchanged on either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from caravanserai.api.binding import Binding, BindingResult
from caravanserai.api.event import Event
from caravanserai.api.lease import Lease
from caravanserai.api.node import Heartbeat, Node
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.client.options import ListOptions, ObjectList
from caravanserai.client.watch import WatchEvent

__all__ = ["Client", "EventAPI", "LeaseAPI", "NodeAPI", "ProjectAPI", "ResourceAPI"]

T = TypeVar("T", bound=Project | Node | Event)


class ResourceAPI(Protocol[T]):
    """The calls of one resource kind (``client.projects`` / ``client.nodes``)."""

    @property
    def model(self) -> type[T]: ...

    @property
    def plural(self) -> str: ...

    async def create(self, obj: T | Mapping[str, Any]) -> T: ...
    async def get(self, name: str) -> T: ...
    async def list(
        self,
        options: ListOptions | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        phase: str | Iterable[str] | None = None,
        node_ref: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
    ) -> ObjectList[T]: ...
    async def list_all(
        self, options: ListOptions | None = None, *, page_size: int = 500
    ) -> ObjectList[T]: ...
    async def update(self, obj: T | Mapping[str, Any]) -> T: ...
    async def update_status(self, obj: T | Mapping[str, Any]) -> T: ...
    async def delete(self, name: str, *, force: bool = False) -> T | None: ...
    def watch(
        self,
        resource_version: str | None = None,
        options: ListOptions | None = None,
        *,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[WatchEvent[T]]: ...


class ProjectAPI(ResourceAPI[Project], Protocol):
    """Projects plus the phase PATCH and batch binding."""

    async def patch_status(
        self,
        name: str,
        phase: ProjectPhase | str,
        reason: str | None = None,
        message: str | None = None,
        *,
        node_ref: str | None = None,
        resource_version: str | None = None,
    ) -> None: ...

    async def bind(self, bindings: Sequence[Binding]) -> list[BindingResult]: ...


class NodeAPI(ResourceAPI[Node], Protocol):
    """Nodes plus the heartbeat."""

    async def heartbeat(self, name: str, heartbeat: Heartbeat | None = None) -> None: ...
    async def last_heartbeat(self, name: str) -> datetime | None: ...


class EventAPI(ResourceAPI[Event], Protocol):
    """Events: ``record`` creates one or aggregates it into the stored one of the same name
    (``POST /api/v1/events``); ``create`` is the same call. ``delete`` takes a
    resourceVersion precondition (the TTL controller's write)."""

    async def record(self, event: Event) -> Event: ...
    async def delete(
        self, name: str, *, force: bool = False, resource_version: str | None = None
    ) -> None: ...


class LeaseAPI(Protocol):
    """Leases (leader election): get, create, update with resourceVersion preconditions."""

    async def get(self, name: str) -> Lease: ...
    async def create(self, lease: Lease) -> Lease: ...
    async def update(self, lease: Lease) -> Lease: ...
    async def delete(self, name: str) -> None: ...


class Client(Protocol):
    """What controllers, informers and the leader elector need of a client."""

    @property
    def projects(self) -> ProjectAPI: ...

    @property
    def nodes(self) -> NodeAPI: ...

    @property
    def leases(self) -> LeaseAPI: ...

    @property
    def events(self) -> EventAPI: ...

    def resource(self, model: type[T]) -> ResourceAPI[T]: ...
