"""``/api/v1/projects``, ``/api/v1/nodes``, ``/api/v1/leases`` and ``/api/v1/bindings``:
translation only. Each handler parses the request, calls the kind's registry
(:mod:`caravanserai.registry`, where every write rule lives) and writes the response or
the problem document.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from caravanserai.api.binding import BindingList, BindingResultList
from caravanserai.api.lease import Lease
from caravanserai.api.node import Heartbeat, Node, NodeHeartbeat
from caravanserai.api.problems import BadRequest
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.api.resources import PROJECTS, ResourceKind
from caravanserai.api.selectors import Selector
from caravanserai.api.validation import parse_resource
from caravanserai.server.authn import acting_node
from caravanserai.server.bodies import read_document, validate_body
from caravanserai.server.dryrun import is_dry_run
from caravanserai.server.httputil import bool_param, int_param, json_response, ordered
from caravanserai.server.models import PhasePatch
from caravanserai.server.state import CONFIG, METRICS, RECORDER, REGISTRIES
from caravanserai.server.watch_stream import serve_watch, watch_params

MAX_LIMIT = 10_000
_PHASES = frozenset(p.value for p in ProjectPhase)


# -- small helpers ------------------------------------------------------------------------


def _with_path_name(data: Any, name: str) -> Any:
    """Let a PUT body omit ``metadata.name`` (it is in the URL), as the original did."""
    if isinstance(data, dict):
        meta = data.get("metadata")
        if meta is None:
            data["metadata"] = {"name": name}
        elif isinstance(meta, dict) and "name" not in meta:
            meta["name"] = name
    return data


def _check_name(model: Project | Node | Lease, name: str) -> None:
    if model.metadata.name != name:
        raise BadRequest(
            f'metadata.name "{model.metadata.name}" does not match URL path "{name}"'
        )


def _registry(request: web.Request, kind: ResourceKind) -> Any:
    """The kind's registry (ProjectRegistry or NodeRegistry: the same typed methods)."""
    registries = request.app[REGISTRIES]
    return registries.projects if kind is PROJECTS else registries.nodes


def _wire(model: Project | Node | Lease, status: int = 200, **kw: Any) -> web.Response:
    return json_response(ordered(model.to_wire()), status, **kw)


# -- handlers shared by both kinds ---------------------------------------------------------


class ResourceHandlers:
    """The handlers of one kind; bound methods are registered as routes."""

    def __init__(self, kind: ResourceKind) -> None:
        self.kind = kind
        self.noun = kind.kind.lower()

    async def _document(self, request: web.Request, name: str | None = None) -> Any:
        config = request.app[CONFIG]
        data = await read_document(request, max_bytes=config.max_body_bytes)
        return data if name is None else _with_path_name(data, name)

    # POST /api/v1/{plural}
    async def create(self, request: web.Request) -> web.Response:
        model = parse_resource(await self._document(request), kind=self.kind.kind)
        created = await _registry(request, self.kind).create(model)
        name = created.metadata.name
        if self.kind is PROJECTS and not is_dry_run():
            request.app[RECORDER].normal(
                "Project", name, "Created", f"Created project {name}", uid=created.metadata.uid
            )
        return _wire(created, 201, headers={"Location": f"/api/v1/{self.kind.plural}/{name}"})

    # GET /api/v1/{plural}/{name}
    async def get(self, request: web.Request) -> web.Response:
        obj = await _registry(request, self.kind).get_stored(request.match_info["name"])
        return json_response(ordered(obj))

    # GET /api/v1/{plural}  (also ?watch=true)
    async def list(self, request: web.Request) -> web.StreamResponse:
        # Every parameter is validated whether or not this is a watch: a bad value is a 400,
        # never silently ignored (``limit``/``continue`` do not apply to watches).
        selector = self.selector(request)
        params = watch_params(request)
        limit = int_param(request, "limit", minimum=1, maximum=MAX_LIMIT)
        if bool_param(request, "watch"):
            return await serve_watch(request, self.kind, selector, params)
        token = request.query.get("continue") or None
        result = await _registry(request, self.kind).list_stored(
            selector, limit=limit, continue_token=token
        )
        request.app[METRICS].observe_revision(result.revision)
        metadata: dict[str, Any] = {"resourceVersion": str(result.revision)}
        if result.continue_token:
            metadata["continue"] = result.continue_token
        return json_response(
            {
                "apiVersion": "caravanserai/v1",
                "kind": self.kind.list_model.__name__,
                "metadata": metadata,
                "items": [ordered(item) for item in result.items],
            }
        )

    def selector(self, request: web.Request) -> Selector:
        """The list/watch selection: label and field selectors plus OR-sets from the query."""
        any_of: dict[str, set[str]] = {}
        if self.kind is PROJECTS:
            phases = _multi(request, "phase")
            for phase in phases:
                if phase not in _PHASES:
                    valid = ", ".join(p.value for p in ProjectPhase)
                    raise BadRequest(f"invalid phase {phase!r}: must be one of {valid}")
            if phases:
                any_of["status.phase"] = set(phases)
            if node_refs := _multi(request, "nodeRef"):
                any_of["status.nodeRef"] = set(node_refs)
        return Selector.parse(
            request.query.get("labelSelector"), request.query.get("fieldSelector"), any_of
        )

    # PUT /api/v1/{plural}/{name}
    async def update(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        model = parse_resource(await self._document(request, name), kind=self.kind.kind)
        _check_name(model, name)
        registries = request.app[REGISTRIES]
        if isinstance(model, Project):
            return _wire(await registries.projects.update(model))
        # A node's own credential may update its Node, never its spec.unschedulable.
        return _wire(await registries.nodes.update(model, as_node=acting_node(request)))

    # PUT /api/v1/{plural}/{name}/status
    async def update_status(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        model = parse_resource(await self._document(request, name), kind=self.kind.kind)
        _check_name(model, name)
        registries = request.app[REGISTRIES]
        if isinstance(model, Project):
            # A node's credential: only a project bound to it (checked by the registry).
            return _wire(
                await registries.projects.update_status(model, as_node=acting_node(request))
            )
        return _wire(await registries.nodes.update_status(model))


def _multi(request: web.Request, name: str) -> list[str]:
    """A repeatable query parameter; each occurrence may also be a comma-separated list."""
    out: list[str] = []
    for value in request.query.getall(name, []):
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


# -- project-only routes -------------------------------------------------------------------


async def patch_project_status(request: web.Request) -> web.Response:
    """``PATCH /api/v1/projects/{name}/status`` ``{phase, reason?, message?, nodeRef?}``."""
    config = request.app[CONFIG]
    data = await read_document(request, max_bytes=config.max_body_bytes)
    patch = validate_body(PhasePatch, data, what="status patch")
    await request.app[REGISTRIES].projects.patch_phase(
        request.match_info["name"],
        patch.phase,
        patch.reason,
        patch.message,
        node_ref=patch.node_ref,
        resource_version=patch.resource_version,
        as_node=acting_node(request),
    )
    return web.Response(status=204)


async def delete_project(request: web.Request) -> web.Response:
    """``DELETE /api/v1/projects/{name}[?force=true]``: 204 when gone, 202 with the object
    when it is now Terminating (see ``ProjectRegistry.delete``)."""
    name = request.match_info["name"]
    force = bool_param(request, "force")
    outcome = await request.app[REGISTRIES].projects.delete(name, force=force)
    if not is_dry_run():
        request.app[RECORDER].normal(
            "Project", name, "Deleting",
            f"Deleting project {name}"
            + (" (forced)" if force else "")
            + ("" if outcome.project is None else ": its node stops its containers first"),
        )
    if outcome.project is None:
        return web.Response(status=204)
    return _wire(outcome.project, 202)


async def create_bindings(request: web.Request) -> web.Response:
    """``POST /api/v1/bindings``: bind many Pending projects in one transaction; 200 with
    one result per binding (a stale one is reported, not fatal)."""
    config = request.app[CONFIG]
    data = await read_document(request, max_bytes=config.max_body_bytes)
    body = validate_body(BindingList, data, what="binding list")
    results = await request.app[REGISTRIES].projects.bind(body.items)
    return json_response(BindingResultList(items=results).to_wire())


# -- node-only routes ----------------------------------------------------------------------


async def delete_node(request: web.Request) -> web.Response:
    """``DELETE /api/v1/nodes/{name}[?force=true]``: 409 while projects occupy the node."""
    await request.app[REGISTRIES].nodes.delete(
        request.match_info["name"], force=bool_param(request, "force")
    )
    return web.Response(status=204)


async def node_heartbeat(request: web.Request) -> web.Response:
    """``POST /api/v1/nodes/{name}/heartbeat``: 204; 404 tells the agent to re-register."""
    config = request.app[CONFIG]
    data = await read_document(request, max_bytes=config.max_body_bytes, allow_empty=True)
    hb = validate_body(Heartbeat, data, what="heartbeat")
    await request.app[REGISTRIES].nodes.heartbeat(request.match_info["name"], hb)
    return web.Response(status=204)


async def get_node_heartbeat(request: web.Request) -> web.Response:
    """``GET /api/v1/nodes/{name}/heartbeat``: when the node last heartbeated."""
    name = request.match_info["name"]
    last = await request.app[REGISTRIES].nodes.last_heartbeat(name)
    return json_response(NodeHeartbeat(node_name=name, last_heartbeat=last).to_wire())


# -- leases --------------------------------------------------------------------------------


class LeaseHandlers:
    """``/api/v1/leases``: create, get, list, update (resourceVersion precondition), delete."""

    async def _lease(self, request: web.Request, name: str | None = None) -> Lease:
        config = request.app[CONFIG]
        data = await read_document(request, max_bytes=config.max_body_bytes)
        if name is not None:
            data = _with_path_name(data, name)
        lease = validate_body(Lease, data, what="lease")
        if name is not None:
            _check_name(lease, name)
        return lease

    async def create(self, request: web.Request) -> web.Response:
        created = await request.app[REGISTRIES].leases.create(await self._lease(request))
        name = created.metadata.name
        return _wire(created, 201, headers={"Location": f"/api/v1/leases/{name}"})

    async def get(self, request: web.Request) -> web.Response:
        obj = await request.app[REGISTRIES].leases.get_stored(request.match_info["name"])
        return json_response(ordered(obj))

    async def list(self, request: web.Request) -> web.Response:
        selector = Selector.parse(
            request.query.get("labelSelector"), request.query.get("fieldSelector")
        )
        result = await request.app[REGISTRIES].leases.list_stored(selector)
        return json_response(
            {
                "apiVersion": "caravanserai/v1",
                "kind": "LeaseList",
                "metadata": {"resourceVersion": str(result.revision)},
                "items": [ordered(item) for item in result.items],
            }
        )

    async def update(self, request: web.Request) -> web.Response:
        lease = await self._lease(request, request.match_info["name"])
        return _wire(await request.app[REGISTRIES].leases.update(lease))

    async def delete(self, request: web.Request) -> web.Response:
        await request.app[REGISTRIES].leases.delete(
            request.match_info["name"],
            resource_version=request.query.get("resourceVersion") or None,
        )
        return web.Response(status=204)
