"""What every kind's registry shares: the store boundary (model ↔ stored form, the one
place objects are converted), reads, and not-found messages that name the kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from pydantic import TypeAdapter

from caravanserai.api.base import Timestamp
from caravanserai.api.event import Event
from caravanserai.api.lease import Lease
from caravanserai.api.node import Node
from caravanserai.api.problems import AlreadyExists, NotFound
from caravanserai.api.project import Project
from caravanserai.api.selectors import Selector
from caravanserai.store.types import ListResult, Mutator, Obj, Store, Watch

M = TypeVar("M", Project, Node, Lease, Event)

RevisionObserver = Callable[[int], None]
"""Told the revision of every write (the server's metrics keep the highest)."""

_TIMESTAMP: TypeAdapter[Any] = TypeAdapter(Timestamp)


def timestamp(now: datetime) -> str:
    """The models' RFC 3339 wire form of a server-written timestamp."""
    return str(_TIMESTAMP.dump_python(now, mode="json"))


def revision_of(obj: Obj) -> int:
    """The stored object's resourceVersion as a number (0 when unset)."""
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class Listing(Generic[M]):
    """One list: the objects, the revision the list saw, the next page's token."""

    items: list[M]
    revision: int
    continue_token: str | None = None


class KindRegistry(Generic[M]):
    """The reads and raw writes of one kind over the store; subclasses add the policy.

    ``decode``/``encode`` are the only conversions between models and the stored (wire
    dict) form in the whole write path.
    """

    model: type[M]
    kind: str
    noun: str

    def __init__(self, store: Store, on_write: RevisionObserver | None = None) -> None:
        self.store = store
        self._on_write = on_write

    # -- the store boundary ---------------------------------------------------------------

    def decode(self, obj: Obj) -> M:
        """Stored form → model (stored objects were valid when written)."""
        return cast(M, self.model.model_validate(obj))

    @staticmethod
    def encode(model: M) -> Obj:
        """Model → stored form."""
        return model.to_wire()

    def observed(self, obj: Obj) -> Obj:
        """Report a write's revision; returns ``obj``."""
        if self._on_write is not None:
            self._on_write(revision_of(obj))
        return obj

    def not_found(self, name: str) -> NotFound:
        return NotFound(f'{self.noun} "{name}" not found')

    # -- reads ----------------------------------------------------------------------------

    async def get_stored(self, name: str) -> Obj:
        """The stored form (what HTTP serves as is); NotFound naming the kind."""
        try:
            return await self.store.get(self.kind, name)
        except NotFound:
            raise self.not_found(name) from None

    async def get(self, name: str) -> M:
        """The object ``name``; NotFound when absent."""
        return self.decode(await self.get_stored(name))

    async def list_stored(
        self,
        selector: Selector | None = None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        """One page in stored form, consistent at one revision."""
        return await self.store.list(
            self.kind, selector, limit=limit, continue_token=continue_token
        )

    async def list(
        self,
        selector: Selector | None = None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Listing[M]:
        """One page of models, consistent at one revision."""
        result = await self.list_stored(selector, limit=limit, continue_token=continue_token)
        return Listing(
            [self.decode(o) for o in result.items], result.revision, result.continue_token
        )

    def watch(self, after_revision: int, selector: Selector | None = None) -> Watch:
        """Events of this kind after ``after_revision`` (stored form; see ``Store.watch``)."""
        return self.store.watch(self.kind, after_revision, selector)

    # -- raw writes (the policy lives in the subclasses) -----------------------------------

    async def _create(self, obj: Obj) -> M:
        name = obj["metadata"]["name"]
        try:
            stored = await self.store.create(obj)
        except AlreadyExists:
            raise AlreadyExists(f'{self.noun} "{name}" already exists') from None
        return self.decode(self.observed(stored))

    async def _replace_spec_and_metadata(
        self, model: Project | Node | Lease, guard: Callable[[Obj, Obj], None] | None = None
    ) -> M:
        """Write ``model``'s spec, labels and annotations over the stored object (nothing,
        no revision, when they are all unchanged); Conflict when its resourceVersion is set
        and stale. The update of kinds whose spec has no further rules (Node, Lease).
        ``guard(current, new_spec)`` may refuse the write (raise) inside its transaction."""
        spec = model.spec.to_wire()
        labels = dict(model.metadata.labels)
        annotations = dict(model.metadata.annotations)

        def mutate(current: Obj) -> Obj | None:
            if guard is not None:
                guard(current, spec)
            meta = current.setdefault("metadata", {})
            if (
                current.get("spec") == spec
                and (meta.get("labels") or {}) == labels
                and (meta.get("annotations") or {}) == annotations
            ):
                return None
            current["spec"] = spec
            meta["labels"] = labels
            meta["annotations"] = annotations
            return current

        name = model.metadata.name
        rv = model.metadata.resource_version
        return self.decode(await self._update(name, mutate, rv))

    async def _update(
        self, name: str, mutate: Mutator, resource_version: str | None = None
    ) -> Obj:
        try:
            stored = await self.store.update(
                self.kind, name, mutate, resource_version=resource_version
            )
        except NotFound:
            raise self.not_found(name) from None
        return self.observed(stored)
