"""Every kind's registry over one store: what the HTTP handlers and the in-process client
share."""

from __future__ import annotations

from caravanserai.registry.base import RevisionObserver
from caravanserai.registry.events import EventRegistry
from caravanserai.registry.leases import LeaseRegistry
from caravanserai.registry.nodes import NodeRegistry
from caravanserai.registry.projects import ProjectRegistry
from caravanserai.store.node_leases import NodeLeases, NodeLeaseStore
from caravanserai.store.postgres import PostgresStore
from caravanserai.store.types import Store


class Registries:
    """``projects``, ``nodes``, ``leases`` and ``events`` over ``store``.

    ``on_write`` is told the revision of every write (the server's metrics). ``node_leases``:
    where heartbeats that change nothing are recorded (by default the lease table of a
    PostgreSQL ``store``; without one every heartbeat rewrites its Node).
    """

    def __init__(
        self,
        store: Store,
        on_write: RevisionObserver | None = None,
        node_leases: NodeLeases | None = None,
    ) -> None:
        self.store = store
        if node_leases is None and isinstance(store, PostgresStore):
            node_leases = NodeLeaseStore(store)
        self.projects = ProjectRegistry(store, on_write)
        self.nodes = NodeRegistry(store, on_write, node_leases)
        self.leases = LeaseRegistry(store, on_write)
        self.events = EventRegistry(store, on_write)
