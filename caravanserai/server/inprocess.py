"""The in-process client: the :class:`~caravanserai.client.interface.Client` interface
implemented directly on the server's registry.

The controller manager inside ``cara-server`` gives it to the controllers and to their
informers: every write takes the same road as an HTTP request's (the registry's rules, one
store transaction) without a socket, an HTTP round trip or JSON on the way; lists and
watches come straight from the store and its watch hub, with the same semantics as the
HTTP watch stream (typed events, BOOKMARKs during silence, an ERROR event carrying
``Expired`` when the revision left the event log).

It lives in ``caravanserai.server`` because it needs the registry, and the package rules
let ``caravanserai.client`` import only ``caravanserai.api``; the interface it implements
is ``caravanserai.client.interface``, so controllers never import this module.

Objects handed out are fresh models decoded from the stored form, so a caller mutating
one cannot change what the store or another caller holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from caravanserai.api.base import API_VERSION
from caravanserai.api.binding import Binding, BindingResult
from caravanserai.api.event import Event
from caravanserai.api.lease import Lease
from caravanserai.api.node import Heartbeat, Node
from caravanserai.api.problems import Expired
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.api.validation import parse_resource
from caravanserai.api.watch import EventType
from caravanserai.client.options import ListOptions, ObjectList
from caravanserai.client.watch import WatchEvent
from caravanserai.registry import Registries
from caravanserai.registry.base import KindRegistry
from caravanserai.registry.events import EventRegistry
from caravanserai.registry.nodes import NodeRegistry
from caravanserai.registry.projects import ProjectRegistry

__all__ = ["InProcessClient"]

T = TypeVar("T", bound=Project | Node | Event)

DEFAULT_BOOKMARK_INTERVAL = 15.0


class _Resource(Generic[T]):
    """The ResourceAPI of one kind over its registry."""

    def __init__(
        self, registry: KindRegistry[Any], model: type[T], plural: str, bookmark_interval: float
    ) -> None:
        self._registry = registry
        self.model = model
        self.plural = plural
        self.bookmark_interval = bookmark_interval

    def _model(self, obj: T | Mapping[str, Any]) -> T:
        if isinstance(obj, Mapping):
            # A manifest dict is checked exactly as the HTTP handler checks a body.
            body = dict(obj)
            body.setdefault("apiVersion", API_VERSION)
            body.setdefault("kind", self.model.__name__)
            return cast(T, parse_resource(body, kind=self.model.__name__))
        return obj

    async def create(self, obj: T | Mapping[str, Any]) -> T:
        """Create the object (see ``CaravanseraiClient``'s ``create``)."""
        return cast(T, await self._registry.create(self._model(obj)))  # type: ignore[attr-defined]

    async def get(self, name: str) -> T:
        """The object; NotFound when absent."""
        return cast(T, await self._registry.get(name))

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
    ) -> ObjectList[T]:
        """One page (all of it without ``limit``), consistent at one revision."""
        opts = options or ListOptions.of(
            label_selector=label_selector,
            field_selector=field_selector,
            phase=phase,
            node_ref=node_ref,
        )
        listing = await self._registry.list(
            opts.to_selector(), limit=limit, continue_token=continue_
        )
        return ObjectList(list(listing.items), str(listing.revision), listing.continue_token)

    async def list_all(
        self, options: ListOptions | None = None, *, page_size: int = 500
    ) -> ObjectList[T]:
        """Every matching object at one revision (one store list: no pages needed)."""
        return await self.list(options)

    async def update(self, obj: T | Mapping[str, Any]) -> T:
        """Replace spec, labels and annotations (resourceVersion precondition when set)."""
        return cast(T, await self._registry.update(self._model(obj)))  # type: ignore[attr-defined]

    async def update_status(self, obj: T | Mapping[str, Any]) -> T:
        """Replace the status (resourceVersion precondition when set)."""
        model = self._model(obj)
        return cast(T, await self._registry.update_status(model))  # type: ignore[attr-defined]

    async def delete(self, name: str, *, force: bool = False) -> T | None:
        """None when the object is gone; the object when it is now Terminating."""
        if isinstance(self._registry, ProjectRegistry):
            outcome = await self._registry.delete(name, force=force)
            return cast(T | None, outcome.project)
        assert isinstance(self._registry, NodeRegistry)
        await self._registry.delete(name, force=force)
        return None

    async def watch(
        self,
        resource_version: str | None = None,
        options: ListOptions | None = None,
        *,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[WatchEvent[T]]:
        """Typed events after ``resource_version`` (without one: ADDED for every current
        object first), BOOKMARKs every ``bookmark_interval`` s of silence, an ERROR event
        with ``Expired`` when the revision left the log."""
        selector = (options or ListOptions()).to_selector()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds if timeout_seconds else None
        decode = self._registry.decode
        try:
            if not resource_version:
                listing = await self._registry.list_stored(selector)
                for obj in listing.items:
                    rv = str(obj["metadata"]["resourceVersion"])
                    yield WatchEvent(EventType.ADDED, decode(obj), rv)
                after = listing.revision
            else:
                after = int(resource_version)
            async with self._registry.watch(after, selector) as w:
                while True:
                    wait = self.bookmark_interval
                    if deadline is not None:
                        left = deadline - loop.time()
                        if left <= 0:
                            return
                        wait = min(wait, left)
                    ev = await w.next(timeout=wait)
                    if ev is None:
                        if allow_bookmarks and (deadline is None or deadline > loop.time()):
                            yield WatchEvent(EventType.BOOKMARK, None, str(w.revision))
                        continue
                    yield WatchEvent(ev.type, decode(ev.object), str(ev.revision))
        except Expired as exc:
            yield WatchEvent(EventType.ERROR, None, "", exc)


class _Projects(_Resource[Project]):
    _registry: ProjectRegistry

    async def patch_status(
        self,
        name: str,
        phase: ProjectPhase | str,
        reason: str | None = None,
        message: str | None = None,
        *,
        node_ref: str | None = None,
        resource_version: str | None = None,
    ) -> None:
        """Move the project to ``phase`` (see ``ProjectRegistry.patch_phase``)."""
        await self._registry.patch_phase(
            name,
            ProjectPhase(phase),
            reason,
            message,
            node_ref=node_ref,
            resource_version=resource_version,
        )

    async def bind(self, bindings: Sequence[Binding]) -> list[BindingResult]:
        """Bind Pending projects in one transaction (see ``ProjectRegistry.bind``)."""
        return await self._registry.bind(bindings)


class _Nodes(_Resource[Node]):
    _registry: NodeRegistry

    async def heartbeat(self, name: str, heartbeat: Heartbeat | None = None) -> None:
        """Merge a heartbeat; NotFound when the node is not registered."""
        await self._registry.heartbeat(name, heartbeat)

    async def last_heartbeat(self, name: str) -> datetime | None:
        """When the node last heartbeated (its lease or its status, the newer)."""
        return await self._registry.last_heartbeat(name)


class _Events(_Resource[Event]):
    _registry: EventRegistry

    def _model(self, obj: Event | Mapping[str, Any]) -> Event:
        return obj if isinstance(obj, Event) else Event.model_validate(dict(obj))

    async def record(self, event: Event) -> Event:
        """Create the event or aggregate it (see ``EventRegistry.record``)."""
        stored, _ = await self._registry.record(event)
        return stored

    async def create(self, obj: Event | Mapping[str, Any]) -> Event:
        """The same as :meth:`record`."""
        return await self.record(self._model(obj))

    async def delete(
        self, name: str, *, force: bool = False, resource_version: str | None = None
    ) -> None:
        """Remove the event (``resource_version``: only that version)."""
        await self._registry.delete(name, resource_version=resource_version)


class _Leases:
    def __init__(self, registries: Registries) -> None:
        self._registry = registries.leases

    async def get(self, name: str) -> Lease:
        return await self._registry.get(name)

    async def create(self, lease: Lease) -> Lease:
        return await self._registry.create(lease)

    async def update(self, lease: Lease) -> Lease:
        return await self._registry.update(lease)

    async def delete(self, name: str) -> None:
        await self._registry.delete(name)


class InProcessClient:
    """The client interface on a server's registries (see the module docstring)::

        client = InProcessClient(app[REGISTRIES])
        await client.projects.patch_status("web", "Scheduled", node_ref="n1")
    """

    def __init__(
        self, registries: Registries, *, bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL
    ) -> None:
        self.registries = registries
        self._projects = _Projects(registries.projects, Project, "projects", bookmark_interval)
        self._nodes = _Nodes(registries.nodes, Node, "nodes", bookmark_interval)
        self._leases = _Leases(registries)
        self._events = _Events(registries.events, Event, "events", bookmark_interval)

    @property
    def projects(self) -> _Projects:
        """Projects."""
        return self._projects

    @property
    def nodes(self) -> _Nodes:
        """Nodes."""
        return self._nodes

    @property
    def leases(self) -> _Leases:
        """Leases."""
        return self._leases

    @property
    def events(self) -> _Events:
        """Events."""
        return self._events

    def resource(self, model: type[T]) -> _Resource[T]:
        """The calls of ``Project``, ``Node`` or ``Event``."""
        if model is Project:
            return cast(_Resource[T], self._projects)
        if model is Node:
            return cast(_Resource[T], self._nodes)
        if model is Event:
            return cast(_Resource[T], self._events)
        raise TypeError(f"no API resource for {model!r}")

    async def close(self) -> None:
        """Nothing to release (same interface as the HTTP client)."""

    async def __aenter__(self) -> InProcessClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
