"""Who may call which route: one access rule per route of the route table, keyed by the
route's operationId. The authorizer (``authz.py``) reads nothing else, and
``tests/integration/test_auth_matrix.py`` fails for a route of ``route_table()`` without a
rule here — a new route gets its rule by one line in :data:`ROUTE_ACCESS`, e.g.::

    "listEvents": Access("events", "list", Role.VIEW),          # also ?watch=true
    "createEvent": Access("events", "create", Role.EDIT, NodeRule.ABOUT_OWN_OBJECTS),

User roles are ordered (``view`` < ``edit`` < ``admin``, as Kubernetes' default
ClusterRoles): a rule names the least role that may call the route. Node credentials are
decided by the rule's :class:`NodeRule` (Kubernetes' Node authorizer + NodeRestriction);
join tokens only by ``join=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from caravanserai.server.authn import Role


class NodeRule(StrEnum):
    """What a node credential may do on a route (see ``authz.node_decision``)."""

    DENY = "deny"
    """Never (the default)."""
    ANY = "any"
    """Always (e.g. ``whoami``)."""
    OWN_NODE = "own-node"
    """Only when the route's ``{name}`` is the node itself (read, heartbeat)."""
    UPDATE_OWN_NODE = "update-own-node"
    """Own Node only; the registry refuses a change of ``spec.unschedulable`` in the write's
    own transaction (cordon/drain is an admin's decision)."""
    REGISTER_SELF = "register-self"
    """Create a Node only with ``metadata.name`` = the node itself."""
    OWN_PROJECTS = "own-projects"
    """List/watch only with ``fieldSelector=status.nodeRef=<self>``."""
    BOUND_PROJECT = "bound-project"
    """Read a project only while it is bound to the node."""
    BOUND_PROJECT_STATUS = "bound-project-status"
    """Write the status of a project bound to the node, never moving it elsewhere; checked
    by the registry inside the write's transaction, so it cannot race a rebind."""
    ABOUT_OWN_OBJECTS = "about-own-objects"
    """Create/update an object whose body's ``involvedObject`` (or ``regarding``) is the
    node's own Node or a project bound to it (an Event an agent reports)."""


@dataclass(frozen=True)
class Access:
    """A route's rule: the resource and verb it acts on (``list`` counts as ``watch`` with
    ``?watch=true``), the least user role that may call it (None: anyone, no token needed),
    what a node credential may do, and whether a join token may call it."""

    resource: str
    verb: str
    role: Role | None
    node: NodeRule = NodeRule.DENY
    join: bool = False

    @property
    def public(self) -> bool:
        return self.role is None


V, E, A = Role.VIEW, Role.EDIT, Role.ADMIN

ROUTE_ACCESS: Mapping[str, Access] = {
    # system: open, so probes, scrapers and API tooling need no secret
    "healthz": Access("system", "get", None),
    "readyz": Access("system", "get", None),
    "version": Access("system", "get", None),
    "openapi": Access("system", "get", None),
    "metrics": Access("metrics", "get", V),  # anonymous unless --metrics-require-token
    "whoami": Access("whoami", "get", V, NodeRule.ANY, join=True),
    # projects
    "createProject": Access("projects", "create", E),
    "listProjects": Access("projects", "list", V, NodeRule.OWN_PROJECTS),
    "getProject": Access("projects", "get", V, NodeRule.BOUND_PROJECT),
    "replaceProject": Access("projects", "update", E),
    "patchProject": Access("projects", "patch", E),
    "replaceProjectStatus": Access("projects/status", "update", A, NodeRule.BOUND_PROJECT_STATUS),
    "patchProjectPhase": Access("projects/status", "patch", A, NodeRule.BOUND_PROJECT_STATUS),
    "deleteProject": Access("projects", "delete", E),
    "readProjectLogs": Access("projects/logs", "get", V),
    "portForwardProject": Access("projects/portforward", "create", E),
    "execProject": Access("projects/exec", "create", E),
    "createBindings": Access("bindings", "create", A),
    # nodes
    "createNode": Access("nodes", "create", A, NodeRule.REGISTER_SELF),
    "listNodes": Access("nodes", "list", V),
    "getNode": Access("nodes", "get", V, NodeRule.OWN_NODE),
    "replaceNode": Access("nodes", "update", A, NodeRule.UPDATE_OWN_NODE),
    "patchNode": Access("nodes", "patch", A),
    "replaceNodeStatus": Access("nodes/status", "update", A),
    "deleteNode": Access("nodes", "delete", A),
    "nodeHeartbeat": Access("nodes/heartbeat", "create", A, NodeRule.OWN_NODE),
    "getNodeHeartbeat": Access("nodes/heartbeat", "get", V, NodeRule.OWN_NODE),
    "joinNode": Access("nodes/join", "create", A, join=True),
    # leases (the controller manager's leader election)
    "createLease": Access("leases", "create", A),
    "listLeases": Access("leases", "list", V),
    "getLease": Access("leases", "get", V),
    "replaceLease": Access("leases", "update", A),
    "deleteLease": Access("leases", "delete", A),
    # events (agents report about their own Node and the projects bound to them)
    "createEvent": Access("events", "create", E, NodeRule.ABOUT_OWN_OBJECTS),
    "listEvents": Access("events", "list", V),
    "getEvent": Access("events", "get", V),
    "deleteEvent": Access("events", "delete", A),
    # tokens
    "createToken": Access("tokens", "create", A),
    "listTokens": Access("tokens", "list", A),
    "revokeToken": Access("tokens", "delete", A),
}
