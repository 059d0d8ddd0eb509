"""Where a reflector gets its objects: list once, then watch from the list's revision.

:class:`ClientListerWatcher` works over any client of the
:class:`~caravanserai.client.interface.Client` interface: the REST client
(``CaravanseraiClient``) for agents, out-of-process controllers and tools, or the server's
in-process client for the controller manager inside ``cara-server`` — the same semantics
either way. Anything with the same two methods works (tests use scripted ones).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from caravanserai.api.event import Event
from caravanserai.api.node import Node
from caravanserai.api.problems import Expired
from caravanserai.api.project import Project
from caravanserai.client.interface import ResourceAPI
from caravanserai.client.options import ListOptions, ObjectList
from caravanserai.client.watch import WatchEvent

__all__ = ["ClientListerWatcher", "HTTPListerWatcher", "ListerWatcher"]

T = TypeVar("T", bound=Project | Node | Event)
T_co = TypeVar("T_co", bound=Project | Node | Event, covariant=True)

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
class ClientListerWatcher(Generic[T]):
    """List/watch with a client's resource calls (``client.projects``, ...).

    Example::

        lw = ClientListerWatcher(client.projects, ListOptions.of(phase="Pending"))
    """

    resources: ResourceAPI[T]
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


HTTPListerWatcher = ClientListerWatcher
"""The name this class had when only the HTTP client implemented the interface."""


def _describe(base: str, options: ListOptions) -> str:
    params = "&".join(f"{k}={v}" for k, v in options.to_params())
    return f"{base}?{params}" if params else base
