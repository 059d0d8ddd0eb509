"""Where a reflector gets its objects: list once, then watch from the list's revision.

Two implementations with the same semantics:

- :class:`HTTPListerWatcher`: over the REST API (``CaravanseraiClient``), for agents,
  out-of-process controllers and tools.
- :class:`StoreListerWatcher`: in-process, straight from a ``Store``'s ``list()`` and
  ``watch()`` (the server's watch hub), for the controller manager inside ``cara-server``.

Anything with the same two methods works (tests use scripted ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

from caravanserai.api.node import Node
from caravanserai.api.problems import Expired
from caravanserai.api.project import Project
from caravanserai.api.watch import EventType
from caravanserai.client.http import ListOptions, ObjectList, ResourceClient
from caravanserai.client.watch import WatchEvent

if TYPE_CHECKING:
    from caravanserai.store.types import Store

__all__ = ["HTTPListerWatcher", "ListerWatcher", "StoreListerWatcher"]

T = TypeVar("T", bound=Project | Node)
T_co = TypeVar("T_co", bound=Project | Node, covariant=True)

_KIND_NAMES: dict[type, str] = {Project: "Project", Node: "Node"}


class ListerWatcher(Protocol[T]):
    """List and watch one kind of object (with one selection).

    ``list()`` returns every selected object and the revision the list saw.
    ``watch(rv)`` yields every event after revision ``rv``, in order, exactly once, plus
    BOOKMARK events carrying a revision to resume from; it may end cleanly (after
    ``timeout_seconds``), raise on a broken connection, or yield an ERROR event / raise
    ``Expired`` when ``rv`` is older than the retained event log.
    """

    @property
    def model(self) -> type[T]:
        """The resource model (``Project`` or ``Node``)."""
        ...

    @property
    def description(self) -> str:
        """Short text for logs, e.g. ``projects?phase=Pending``."""
        ...

    async def list(self) -> ObjectList[T]:
        """Every selected object and the list's revision (all pages, one revision)."""
        ...

    def watch(
        self, resource_version: str, *, timeout_seconds: int | None = None
    ) -> AsyncIterator[WatchEvent[T]]:
        """Events after ``resource_version`` (an async generator; closed with ``aclose``)."""
        ...


@dataclass
class HTTPListerWatcher(Generic[T]):
    """List/watch over HTTP with a :class:`ResourceClient` (``client.projects``, ...).

    Example::

        lw = HTTPListerWatcher(client.projects, ListOptions.of(phase="Pending"))
    """

    resources: ResourceClient[T]
    options: ListOptions = field(default_factory=ListOptions)
    page_size: int = 500

    @property
    def model(self) -> type[T]:
        """The resource model."""
        return self.resources.model

    @property
    def description(self) -> str:
        """``plural?selectors``."""
        return _describe(self.resources.plural, self.options)

    async def list(self) -> ObjectList[T]:
        """All pages at one revision; restarts if the continue token expires mid-way."""
        while True:
            try:
                return await self.resources.list_all(self.options, page_size=self.page_size)
            except Expired:
                continue

    async def watch(
        self, resource_version: str, *, timeout_seconds: int | None = None
    ) -> AsyncIterator[WatchEvent[T]]:
        """The server's watch stream with bookmarks."""
        async for event in self.resources.watch(
            resource_version, self.options, timeout_seconds=timeout_seconds
        ):
            yield event


@dataclass
class StoreListerWatcher(Generic[T]):
    """List/watch in-process from a ``Store`` (the server's store and watch hub).

    Same semantics as over HTTP: a watch yields typed events, BOOKMARKs every
    ``bookmark_interval`` seconds of silence, and an ERROR event carrying ``Expired`` when
    the revision is no longer in the event log.
    """

    store: Store
    model_type: type[T]
    options: ListOptions = field(default_factory=ListOptions)
    bookmark_interval: float = 15.0
    page_size: int | None = None

    @property
    def model(self) -> type[T]:
        """The resource model."""
        return self.model_type

    @property
    def kind(self) -> str:
        """The kind name the store uses (``Project`` / ``Node``)."""
        return _KIND_NAMES[self.model_type]

    @property
    def description(self) -> str:
        """``store:Kind?selectors``."""
        return _describe(f"store:{self.kind}", self.options)

    def _parse(self, obj: dict[str, object]) -> T:
        return cast(T, self.model_type.model_validate(obj))

    async def list(self) -> ObjectList[T]:
        """All pages of ``store.list`` at one revision."""
        selector = self.options.to_selector()
        while True:
            items: list[T] = []
            token: str | None = None
            try:
                while True:
                    result = await self.store.list(
                        self.kind, selector, limit=self.page_size, continue_token=token
                    )
                    items.extend(self._parse(o) for o in result.items)
                    token = result.continue_token
                    if not token:
                        return ObjectList(items, str(result.revision))
            except Expired:
                continue

    async def watch(
        self, resource_version: str, *, timeout_seconds: int | None = None
    ) -> AsyncIterator[WatchEvent[T]]:
        """Events of ``store.watch`` after ``resource_version``, typed, with bookmarks."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds if timeout_seconds else None
        try:
            async with self.store.watch(
                self.kind, int(resource_version or 0), self.options.to_selector()
            ) as w:
                while True:
                    wait = self.bookmark_interval
                    if deadline is not None:
                        left = deadline - loop.time()
                        if left <= 0:
                            return
                        wait = min(wait, left)
                    ev = await w.next(timeout=wait)
                    if ev is None:
                        if deadline is None or deadline > loop.time():
                            yield WatchEvent(EventType.BOOKMARK, None, str(w.revision))
                        continue
                    yield WatchEvent(ev.type, self._parse(ev.object), str(ev.revision))
        except Expired as exc:
            yield WatchEvent(EventType.ERROR, None, "", exc)


def _describe(base: str, options: ListOptions) -> str:
    params = "&".join(f"{k}={v}" for k, v in options.to_params())
    return f"{base}?{params}" if params else base
