"""What a project requests and a node offers, in CPUs and bytes (shared by the scheduler
and ``caractrl describe node``).

A project's request is the sum over its services of ``resources.requests`` (a service with
limits but no requests requests its limits, as Kubernetes defaults them). A node offers its
``status.allocatable`` (``cpu``, ``memory``); a resource it does not report is not limited.
"""

from __future__ import annotations

from dataclasses import dataclass

from caravanserai.api.node import Node
from caravanserai.api.project import Project
from caravanserai.api.quantities import parse_cpus, parse_memory


@dataclass(frozen=True)
class Amount:
    """CPUs and bytes of memory."""

    cpus: float = 0.0
    memory: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.cpus + other.cpus, self.memory + other.memory)

    def __sub__(self, other: Amount) -> Amount:
        return Amount(self.cpus - other.cpus, self.memory - other.memory)

    @property
    def zero(self) -> bool:
        return self.cpus <= 0 and self.memory <= 0


ZERO = Amount()


def project_request(project: Project) -> Amount:
    """The summed requests of the project's services."""
    total = ZERO
    for svc in project.spec.services:
        res = svc.resources
        if res is None:
            continue
        req, lim = res.requests, res.limits
        cpus = req.cpus if req is not None and req.cpus is not None else (
            lim.cpus if lim is not None else None)
        memory = req.memory if req is not None and req.memory is not None else (
            lim.memory if lim is not None else None)
        try:
            total += Amount(
                parse_cpus(cpus) if cpus is not None else 0.0,
                parse_memory(memory) if memory is not None else 0,
            )
        except ValueError:
            continue  # validation rejects these; an old stored object requests nothing
    return total


@dataclass(frozen=True)
class Capacity:
    """What a node offers; None: not reported, so not limited."""

    cpus: float | None
    memory: int | None


def node_allocatable(node: Node) -> Capacity:
    alloc = node.status.allocatable
    cpus = memory = None
    try:
        if "cpu" in alloc:
            cpus = parse_cpus(alloc["cpu"])
        if "memory" in alloc:
            memory = parse_memory(alloc["memory"])
    except ValueError:
        pass
    return Capacity(cpus, memory)
