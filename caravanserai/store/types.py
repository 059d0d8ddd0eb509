"""What the store hands out: events, list results, and the Store protocol other layers use."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from caravanserai.api.problems import CaravanseraiError
from caravanserai.api.selectors import Selector
from caravanserai.api.watch import EventType

# Objects travel through the store as their JSON (wire) dict form: the layer above parses them
# into models once, where needed. A Mutator receives a deep copy of the current object and
# returns the new one (or None for "no change", which writes nothing and bumps no revision).
Obj = dict[str, Any]
Mutator = Callable[[Obj], Obj | None]


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """One committed write, as appended to the event log.

    ``object`` is the object after the write (for DELETED: its last state, with
    ``metadata.resourceVersion`` set to the delete's revision); ``old_object`` the state
    before (None for ADDED). Watch filtering uses both to turn "starts/stops matching" into
    ADDED/DELETED.
    """

    revision: int
    kind: str
    name: str
    type: EventType  # ADDED | MODIFIED | DELETED
    object: Obj
    old_object: Obj | None
    # Approximate memory held by the event (the JSON text of both objects, in characters):
    # what byte bounds on the watch path count. 0 when unknown.
    size: int = 0


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[Obj]
    revision: int  # the revision the list's snapshot saw
    continue_token: str | None = None


class Watch(Protocol):
    """A live watch: events after a revision, in revision order, exactly once.

    Use as ``async with store.watch(...) as w: async for ev in w: ...`` or call
    ``await w.next(timeout)`` which returns None when nothing arrived in time (cancellation
    safe, so callers can interleave bookmarks), or ``await w.next_batch(deadline)`` for
    everything available at once (a stream writes it in one go). ``revision`` is the
    highest revision this watcher has been served up to (events filtered out by its
    selector count as served), so a BOOKMARK carrying it is always safe to resume from.
    """

    @property
    def revision(self) -> int: ...
    async def start(self) -> None: ...
    def set_output(
        self, queued_bytes: Callable[[], int], on_ended: Callable[[], None]
    ) -> None: ...
    async def next(self, timeout: float | None = None) -> StoreEvent | None: ...  # noqa: ASYNC109
    async def next_batch(
        self, deadline: float | None = None, *, max_events: int = ..., max_bytes: int = ...
    ) -> builtins.list[StoreEvent]: ...
    def __aiter__(self) -> AsyncIterator[StoreEvent]: ...
    async def __aenter__(self) -> Watch: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def aclose(self) -> None: ...


class Store(Protocol):
    """The storage contract (implemented by ``caravanserai.store.postgres.PostgresStore``)."""

    async def create(self, obj: Obj) -> Obj: ...
    async def get(self, kind: str, name: str) -> Obj: ...
    async def list(
        self,
        kind: str,
        selector: Selector | None = None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult: ...
    async def update(
        self, kind: str, name: str, mutate: Mutator, *, resource_version: str | None = None
    ) -> Obj: ...
    async def update_many(
        self, kind: str, updates: builtins.list[tuple[str, Mutator, str | None]]
    ) -> builtins.list[Obj | CaravanseraiError]: ...
    async def delete(
        self,
        kind: str,
        name: str,
        *,
        resource_version: str | None = None,
        precondition: Callable[[Obj], None] | None = None,
    ) -> Obj: ...
    def watch(
        self,
        kind: str | None,
        after_revision: int,
        selector: Selector | None = None,
        *,
        max_queued_bytes: int | None = None,
    ) -> Watch: ...
    async def current_revision(self) -> int: ...
