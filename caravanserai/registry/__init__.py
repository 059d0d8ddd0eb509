"""The registry: one module per kind holding that kind's whole write policy.

Every write from any client — an HTTP handler, the in-process client the controllers use —
goes through these typed methods (kube-apiserver's registry + strategy): defaults,
validation on write, the phase machine, delete semantics, status and heartbeat rules, then
one store transaction. Models are converted to and from the stored form in exactly one
place, :mod:`caravanserai.registry.base`.
"""

from caravanserai.registry.base import Listing, RevisionObserver
from caravanserai.registry.events import EventRegistry
from caravanserai.registry.leases import LeaseRegistry
from caravanserai.registry.nodes import NodeRegistry
from caravanserai.registry.projects import DeleteOutcome, ProjectRegistry
from caravanserai.registry.registries import Registries

__all__ = [
    "DeleteOutcome",
    "EventRegistry",
    "LeaseRegistry",
    "Listing",
    "NodeRegistry",
    "ProjectRegistry",
    "Registries",
    "RevisionObserver",
]
