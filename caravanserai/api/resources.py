"""The registry of resource kinds: their models, list models and URL plurals.

``KINDS`` is the one list of the kinds users manage (apply, get, delete); ``LEASES`` is the
coordination kind leader election writes (served at ``/api/v1/leases``, never applied).
Events (``/api/v1/events``, written by the system, never applied) are described in
:mod:`caravanserai.api.event` (``EVENTS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from caravanserai.api.lease import Lease, LeaseList
from caravanserai.api.node import Node, NodeList
from caravanserai.api.project import Project, ProjectList

Resource = Project | Node


@dataclass(frozen=True)
class ResourceKind:
    kind: str
    plural: str
    model: type[Project] | type[Node]
    list_model: type[ProjectList] | type[NodeList]


@dataclass(frozen=True)
class CoordinationKind:
    kind: str
    plural: str
    model: type[Lease]
    list_model: type[LeaseList]


PROJECTS = ResourceKind("Project", "projects", Project, ProjectList)
NODES = ResourceKind("Node", "nodes", Node, NodeList)
KINDS: dict[str, ResourceKind] = {PROJECTS.kind: PROJECTS, NODES.kind: NODES}
BY_PLURAL: dict[str, ResourceKind] = {k.plural: k for k in KINDS.values()}
LEASES = CoordinationKind("Lease", "leases", Lease, LeaseList)

