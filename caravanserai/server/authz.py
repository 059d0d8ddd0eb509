"""Authorization: may this identity do this verb on this route? One layer before every
handler, driven by the access rules (:data:`caravanserai.server.access.ROUTE_ACCESS`).

Users: a route's rule names the least role (``view`` < ``edit`` < ``admin``). A ``join``
token may only call routes marked ``join`` (exchanging itself for a node credential). A node
credential (as Kubernetes' Node authorizer + NodeRestriction) is decided by the rule's
:class:`NodeRule`: what needs only the request (its own name, its own field selector) is
decided here; what depends on the stored object at write time (the project is bound to this
node, ``spec.unschedulable`` unchanged) is decided by the registry inside the write's own
transaction, with the node handed down by the handler (``authn.acting_node``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from caravanserai.api.problems import CaravanseraiError, Forbidden, NotFound, Unauthorized
from caravanserai.logging import get_logger
from caravanserai.server.access import Access, NodeRule
from caravanserai.server.authn import IDENTITY, Authenticator, Identity, Role
from caravanserai.server.bodies import read_document
from caravanserai.server.ui import is_ui_path
from caravanserai.store.types import Store

log = get_logger("caravanserai.server.audit")

ROLE_ORDER: Mapping[Role, int] = {Role.VIEW: 1, Role.EDIT: 2, Role.ADMIN: 3}
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Tunnels change things inside containers although they are GETs (WebSocket upgrades).
_MUTATING_RESOURCES = frozenset({"projects/portforward", "projects/exec"})


def effective_verb(access: Access, query: Mapping[str, str]) -> str:
    """``list`` with ``watch=true`` is ``watch`` (as in Kubernetes)."""
    if access.verb == "list" and query.get("watch", "").strip().lower() in ("true", "1"):
        return "watch"
    return access.verb


def user_allows(role: Role, access: Access) -> bool:
    """Whether a user (or join) token of ``role`` may call a route with this rule (pure)."""
    if access.role is None:
        return True
    if role is Role.JOIN:
        return access.join
    have = ROLE_ORDER.get(role)
    return have is not None and have >= ROLE_ORDER[access.role]


def selects_only_node(query: Mapping[str, str], getall: list[str], node: str) -> bool:
    """True when a project list/watch query can only return projects bound to ``node``:
    its field selector ANDs in ``status.nodeRef=<node>`` and any ``nodeRef`` OR-set names
    only ``node``."""
    terms = [t.replace(" ", "") for t in (query.get("fieldSelector") or "").split(",")]
    pinned = any(t in (f"status.nodeRef={node}", f"status.nodeRef=={node}") for t in terms)
    extra = {v.strip() for value in getall for v in value.split(",") if v.strip()}
    return pinned and extra <= {node}


@dataclass(frozen=True)
class NodeRequest:
    """What the node rules look at, gathered once (the pure decision is
    :func:`node_decision`)."""

    node: str
    rule: NodeRule
    verb: str
    name: str | None
    only_own_projects: bool = False
    stored_node_ref: str | None = None  # the project's status.nodeRef (BOUND_PROJECT)
    body: Any = None
    about_node_ref: str | None = None  # ABOUT_OWN_OBJECTS: the involved project's nodeRef


def involved_object(body: Any) -> tuple[str, str] | None:
    """``(kind, name)`` of the object a body is about (``involvedObject`` or ``regarding``)."""
    if not isinstance(body, dict):
        return None
    ref = body.get("involvedObject") or body.get("regarding")
    if not isinstance(ref, dict):
        return None
    kind, name = ref.get("kind"), ref.get("name")
    return (kind, name) if isinstance(kind, str) and isinstance(name, str) else None


def node_decision(req: NodeRequest) -> str | None:
    """None when the node may, else why not (pure)."""
    me = req.node
    match req.rule:
        case NodeRule.ANY:
            return None
        case NodeRule.OWN_NODE | NodeRule.UPDATE_OWN_NODE:
            # UPDATE_OWN_NODE: the registry keeps spec.unschedulable (acting_node).
            return None if req.name == me else "a node may only read and write its own Node"
        case NodeRule.REGISTER_SELF:
            meta = (req.body or {}).get("metadata") if isinstance(req.body, dict) else None
            name = meta.get("name") if isinstance(meta, dict) else None
            return None if name == me else "a node may only register itself"
        case NodeRule.OWN_PROJECTS:
            if req.only_own_projects:
                return None
            return f"a node may only {req.verb} projects with fieldSelector=status.nodeRef={me}"
        case NodeRule.BOUND_PROJECT:
            return None if req.stored_node_ref == me else "the project is not bound to this node"
        case NodeRule.BOUND_PROJECT_STATUS:
            return None  # the registry checks the binding in the write's transaction
        case NodeRule.ABOUT_OWN_OBJECTS:
            about = involved_object(req.body)
            if about == ("Node", me):
                return None
            if about is not None and about[0] == "Project" and req.about_node_ref == me:
                return None
            return "a node may only report about itself and the projects bound to it"
    return "a node may not call this route"


@dataclass(frozen=True)
class Authorizer:
    """Decides for every request; needs the store only for node credentials."""

    store: Store
    max_body_bytes: int
    metrics_anonymous: bool = True

    async def check(
        self, identity: Identity | None, access: Access, request: web.Request
    ) -> str:
        """The effective verb if allowed; raises Unauthorized or Forbidden."""
        verb = effective_verb(access, request.query)
        if access.public or (access.resource == "metrics" and self.metrics_anonymous):
            return verb
        if identity is None:
            raise Unauthorized("this request needs a bearer token")
        name = request.match_info.get("name")
        what = f'{access.resource} "{name}"' if name else access.resource
        if identity.role is Role.NODE and identity.node:
            why = node_decision(await self._node_request(identity.node, access, verb, request))
            if why is not None:
                raise Forbidden(f'node "{identity.node}" may not {verb} {what}: {why}')
            return verb
        if not user_allows(identity.role, access):
            need = "a join token" if access.join and access.role is None else (
                f"role {access.role}" + (" (or a join token)" if access.join else "")
            )
            raise Forbidden(
                f'token "{identity.name}" has role {identity.role}, which may not {verb} '
                f"{what}: that needs {need}"
            )
        return verb

    async def _stored_node_ref(self, kind: str, name: str | None) -> str | None:
        if not name:
            return None
        try:
            obj = await self.store.get(kind, name)
        except NotFound:
            return None  # not bound to anyone: the same 403 (no existence oracle)
        return (obj.get("status") or {}).get("nodeRef")

    async def _node_request(
        self, node: str, access: Access, verb: str, request: web.Request
    ) -> NodeRequest:
        name = request.match_info.get("name")
        rule = access.node
        stored_ref: str | None = None
        about_ref: str | None = None
        body: Any = None
        if rule is NodeRule.BOUND_PROJECT:
            stored_ref = await self._stored_node_ref("Project", name)
        if rule in (NodeRule.REGISTER_SELF, NodeRule.ABOUT_OWN_OBJECTS):
            # Cached for the handler (bodies.RAW_BODY); a bad body is the handler's 4xx anyway.
            body = await read_document(request, max_bytes=self.max_body_bytes, allow_empty=True)
            about = involved_object(body)
            if rule is NodeRule.ABOUT_OWN_OBJECTS and about and about[0] == "Project":
                about_ref = await self._stored_node_ref("Project", about[1])
        return NodeRequest(
            node, rule, verb, name,
            only_own_projects=selects_only_node(
                request.query, request.query.getall("nodeRef", []), node
            ),
            stored_node_ref=stored_ref,
            body=body,
            about_node_ref=about_ref,
        )


def auth_middleware(
    authenticator: Authenticator,
    authorizer: Authorizer,
    rules: Mapping[str, Access],
) -> Middleware:
    """Authenticate, authorize (from the access rules), audit mutating requests."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_name = request.match_info.route.name
        if route_name is None:
            if is_ui_path(request.path) or request.match_info.http_exception is not None:
                # The dashboard's static files (public, like any web UI), or no route
                # matched at all: the router's 404/405.
                return await handler(request)
            raise Forbidden(f"route {request.method} {request.path} has no authorization rule")
        access = rules.get(route_name)
        mutating = request.method in MUTATING_METHODS or (
            access is not None and access.resource in _MUTATING_RESOURCES
        )
        identity: Identity | None = None
        verb = access.verb if access else request.method.lower()
        status = 500
        try:
            identity = await authenticator.identify(request)
            if access is None:
                raise Forbidden(f"route {route_name} has no authorization rule")
            verb = await authorizer.check(identity, access, request)
            if identity is not None:
                request[IDENTITY] = identity
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except CaravanseraiError as exc:
            status = exc.status
            raise
        finally:
            if mutating:
                log.info(
                    "audit",
                    who=str(identity) if identity else "anonymous",
                    verb=verb,
                    resource=access.resource if access else route_name,
                    name=request.match_info.get("name"),
                    result=status,
                )

    return middleware
