"""Every kind's registry over one store: what the HTTP handlers and the in-process client
share."""

from __future__ import annotations

from caravanserai.registry.base import RevisionObserver
from caravanserai.registry.events import EventRegistry
from caravanserai.registry.leases import LeaseRegistry
from caravanserai.registry.nodes import NodeRegistry
from caravanserai.registry.projects import ProjectRegistry
from caravanserai.store.types import Store


class Registries:
    """``projects``, ``nodes``, ``leases`` and ``events`` over ``store``.

    ``on_write`` is told the revision of every write (the server's metrics).
    """

    def __init__(self, store: Store, on_write: RevisionObserver | None = None) -> None:
        self.store = store
        self.projects = ProjectRegistry(store, on_write)
        self.nodes = NodeRegistry(store, on_write)
        self.leases = LeaseRegistry(store, on_write)
        self.events = EventRegistry(store, on_write)
