"""The informer's local cache: objects by name plus secondary indexes.

Not thread-safe and needs no locks: it is only touched from the event loop, and every
method is synchronous, so a reader never sees a half-applied change.

Objects in the cache are shared with every handler and reader: treat them as read-only.
To change one, copy it first (``obj.model_copy(deep=True)``) and write the copy through the
API.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from caravanserai.api.event import Event
from caravanserai.api.node import Node
from caravanserai.api.project import Project

__all__ = [
    "Cache",
    "Delta",
    "DeltaType",
    "IndexFunc",
    "Indexer",
    "index_by_label",
    "index_by_node_ref",
    "index_by_phase",
    "index_by_state",
]

T = TypeVar("T", bound=Project | Node | Event)

IndexFunc = Callable[[T], Iterable[str]]
"""Returns the index values of an object (none, one or several)."""


def index_by_node_ref(obj: Project | Node) -> list[str]:
    """Projects by ``status.nodeRef`` (none when unassigned)."""
    node_ref = getattr(obj.status, "node_ref", None)
    return [node_ref] if node_ref else []


def index_by_phase(obj: Project | Node) -> list[str]:
    """Projects by ``status.phase``."""
    phase = getattr(obj.status, "phase", None)
    return [str(phase)] if phase else []


def index_by_state(obj: Project | Node) -> list[str]:
    """Nodes by ``status.state``."""
    state = getattr(obj.status, "state", None)
    return [str(state)] if state else []


def index_by_label(key: str) -> Callable[[Project | Node], list[str]]:
    """An index function over the value of label ``key``."""

    def index(obj: Project | Node) -> list[str]:
        value = obj.metadata.labels.get(key)
        return [value] if value is not None else []

    return index


class DeltaType(StrEnum):
    """What happened to an object, as seen by the cache."""

    ADDED = "Added"
    UPDATED = "Updated"
    DELETED = "Deleted"
    SYNC = "Sync"  # periodic resync: old is new


@dataclass(frozen=True, slots=True)
class Delta(Generic[T]):
    """One change applied to the cache: ``old`` is None for ADDED, ``new`` for DELETED is
    the last known state."""

    type: DeltaType
    old: T | None
    new: T

    @property
    def name(self) -> str:
        """The object's name."""
        return self.new.metadata.name


class Indexer(Generic[T]):
    """One named secondary index: index value -> set of object names."""

    def __init__(self, name: str, func: IndexFunc[T]) -> None:
        self.name = name
        self.func = func
        self._index: dict[str, set[str]] = {}

    def values_of(self, obj: T) -> set[str]:
        """The index values of ``obj``."""
        return set(self.func(obj))

    def add(self, name: str, obj: T) -> None:
        """Index ``obj`` under its values."""
        for value in self.values_of(obj):
            self._index.setdefault(value, set()).add(name)

    def remove(self, name: str, obj: T) -> None:
        """Drop ``obj`` from its values."""
        for value in self.values_of(obj):
            names = self._index.get(value)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._index[value]

    def names(self, value: str) -> set[str]:
        """Names indexed under ``value``."""
        return set(self._index.get(value, ()))

    def values(self) -> list[str]:
        """Every index value with at least one object."""
        return list(self._index)

    def clear(self) -> None:
        """Empty the index."""
        self._index.clear()


class Cache(Generic[T]):
    """Objects by name, with named indexers (``by_index("nodeRef", "n1")``).

    The reflector writes it (``apply_*`` methods); everyone else reads (``get``, ``list``,
    ``by_index``).
    """

    def __init__(self, indexers: Mapping[str, IndexFunc[T]] | None = None) -> None:
        self._items: dict[str, T] = {}
        self._indexers: dict[str, Indexer[T]] = {}
        self.resource_version = ""
        """The revision the cache reflects (last list, event or bookmark)."""
        for name, func in (indexers or {}).items():
            self.add_indexer(name, func)

    # -- reads ----------------------------------------------------------------------------

    def get(self, name: str) -> T | None:
        """The object called ``name``, or None."""
        return self._items.get(name)

    def list(self) -> builtins.list[T]:
        """Every object (a new list; the objects are shared, do not mutate them)."""
        return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        """Every object name."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def by_index(self, index: str, value: str) -> builtins.list[T]:
        """Objects whose indexer ``index`` yields ``value`` (KeyError for unknown indexes)."""
        return [self._items[n] for n in sorted(self.index_keys(index, value))]

    def index_keys(self, index: str, value: str) -> set[str]:
        """Names of the objects whose indexer ``index`` yields ``value``."""
        try:
            return self._indexers[index].names(value)
        except KeyError:
            raise KeyError(f"no indexer named {index!r}") from None

    def index_values(self, index: str) -> builtins.list[str]:
        """Every value of indexer ``index`` that has objects."""
        return self._indexers[index].values()

    @property
    def indexers(self) -> builtins.list[str]:
        """Names of the registered indexers."""
        return list(self._indexers)

    # -- writes (the reflector's) ---------------------------------------------------------

    def add_indexer(self, name: str, func: IndexFunc[T]) -> None:
        """Register an indexer (existing objects are indexed at once).

        Registering the same name twice with the same function is a no-op; with another
        function it is a ValueError.
        """
        existing = self._indexers.get(name)
        if existing is not None:
            if existing.func is not func:
                raise ValueError(f"indexer {name!r} already registered with another function")
            return
        indexer = Indexer(name, func)
        for key, obj in self._items.items():
            indexer.add(key, obj)
        self._indexers[name] = indexer

    def upsert(self, obj: T) -> T | None:
        """Store ``obj`` under its name; return the previous object (None if new)."""
        name = obj.metadata.name
        old = self._items.get(name)
        if old is not None:
            for indexer in self._indexers.values():
                indexer.remove(name, old)
        self._items[name] = obj
        for indexer in self._indexers.values():
            indexer.add(name, obj)
        return old

    def delete(self, name: str) -> T | None:
        """Remove ``name``; return the object that was there (None if absent)."""
        old = self._items.pop(name, None)
        if old is not None:
            for indexer in self._indexers.values():
                indexer.remove(name, old)
        return old

    def replace(self, items: Iterable[T], resource_version: str) -> builtins.list[Delta[T]]:
        """Make the cache equal to ``items`` and return the difference.

        Objects that are new are ADDED, objects whose resourceVersion changed are UPDATED,
        objects no longer present are DELETED (with their last known state). Objects with
        an unchanged resourceVersion produce nothing — so a relist after ``410 Gone``
        delivers exactly what the handlers missed.
        """
        deltas: builtins.list[Delta[T]] = []
        seen: set[str] = set()
        for obj in items:
            name = obj.metadata.name
            seen.add(name)
            old = self._items.get(name)
            if old is not None and (
                old.metadata.resource_version == obj.metadata.resource_version
            ):
                continue
            self.upsert(obj)
            deltas.append(
                Delta(DeltaType.ADDED if old is None else DeltaType.UPDATED, old, obj)
            )
        for name in [n for n in self._items if n not in seen]:
            old = self.delete(name)
            assert old is not None
            deltas.append(Delta(DeltaType.DELETED, old, old))
        self.resource_version = resource_version
        return deltas
