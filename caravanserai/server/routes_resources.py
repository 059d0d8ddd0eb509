"""``/api/v1/projects`` and ``/api/v1/nodes``: create, get, list (and watch), update, status,
delete, the project phase PATCH and the node heartbeat.

Every write that depends on the current state is a store ``update`` with a mutator, so the
rule check and the write are one atomic step (no read-modify-write races, REFERENCE §10.9).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter

from caravanserai.api.base import ObjectMeta, Timestamp, utcnow
from caravanserai.api.node import Heartbeat, Node, NodeStatus
from caravanserai.api.problems import (
    AlreadyExists,
    BadRequest,
    Conflict,
    FieldError,
    Invalid,
    NotFound,
)
from caravanserai.api.project import Project, ProjectPhase, ProjectStatus
from caravanserai.api.resources import NODES, PROJECTS, ResourceKind
from caravanserai.api.selectors import Selector
from caravanserai.api.validation import parse_resource
from caravanserai.logging import get_logger
from caravanserai.server import collisions, lifecycle
from caravanserai.server.bodies import read_document, validate_body
from caravanserai.server.httputil import bool_param, int_param, json_response, ordered
from caravanserai.server.models import PhasePatch
from caravanserai.server.state import CONFIG, METRICS, STORE
from caravanserai.server.watch_stream import serve_watch, watch_params
from caravanserai.store.types import Obj

log = get_logger("caravanserai.server.resources")

MAX_LIMIT = 10_000
_PHASES = frozenset(p.value for p in ProjectPhase)
# Phases whose project occupies its node: a node with such projects cannot be deleted.
OCCUPYING_PHASES = frozenset(
    {ProjectPhase.SCHEDULED, ProjectPhase.RUNNING, ProjectPhase.TERMINATING}
)


# -- small helpers ------------------------------------------------------------------------


def _noun(kind: ResourceKind) -> str:
    return kind.kind.lower()


def _revision_of(obj: Obj) -> int:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


def _observe(request: web.Request, obj: Obj) -> None:
    request.app[METRICS].observe_revision(_revision_of(obj))


def _with_path_name(data: Any, name: str) -> Any:
    """Let a PUT body omit ``metadata.name`` (it is in the URL), as the original did."""
    if isinstance(data, dict):
        meta = data.get("metadata")
        if meta is None:
            data["metadata"] = {"name": name}
        elif isinstance(meta, dict) and "name" not in meta:
            meta["name"] = name
    return data


def _check_name(model: Project | Node, name: str) -> None:
    if model.metadata.name != name:
        raise BadRequest(
            f'metadata.name "{model.metadata.name}" does not match URL path "{name}"'
        )


async def _get_or_404(request: web.Request, kind: ResourceKind, name: str) -> Obj:
    try:
        return await request.app[STORE].get(kind.kind, name)
    except NotFound:
        raise NotFound(f'{_noun(kind)} "{name}" not found') from None


async def _update_or_404(
    request: web.Request,
    kind: ResourceKind,
    name: str,
    mutate: Callable[[Obj], Obj | None],
    resource_version: str | None = None,
) -> Obj:
    try:
        stored = await request.app[STORE].update(
            kind.kind, name, mutate, resource_version=resource_version
        )
    except NotFound:
        raise NotFound(f'{_noun(kind)} "{name}" not found') from None
    _observe(request, stored)
    return stored


_TIMESTAMP: TypeAdapter[Any] = TypeAdapter(Timestamp)


def _ts(now: datetime) -> str:
    """The models' RFC 3339 wire form of a server-written timestamp."""
    return str(_TIMESTAMP.dump_python(now, mode="json"))


def new_object(model: Project | Node, now: datetime) -> Obj:
    """The stored form of a create: the client's metadata (name, labels, annotations) and
    spec, with server-managed metadata and a fresh status (client status is ignored)."""
    # uid, generation, creationTimestamp and resourceVersion are set by the store.
    meta = ObjectMeta(
        name=model.metadata.name,
        labels=dict(model.metadata.labels),
        annotations=dict(model.metadata.annotations),
    )
    status: ProjectStatus | NodeStatus
    if isinstance(model, Project):
        status = lifecycle.initial_project_status(now)
    else:
        status = lifecycle.initial_node_status(now)
    return model.model_copy(update={"metadata": meta, "status": status}).to_wire()


def _is_deleting(obj: Obj) -> bool:
    status = obj.get("status") or {}
    return bool((obj.get("metadata") or {}).get("deletionTimestamp")) or status.get("phase") in (
        ProjectPhase.TERMINATING,
        ProjectPhase.TERMINATED,
    )


# -- handlers shared by both kinds ---------------------------------------------------------


class ResourceHandlers:
    """The handlers of one kind; bound methods are registered as routes."""

    def __init__(self, kind: ResourceKind) -> None:
        self.kind = kind
        self.noun = _noun(kind)

    # POST /api/v1/{plural}
    async def create(self, request: web.Request) -> web.Response:
        config = request.app[CONFIG]
        data = await read_document(request, max_bytes=config.max_body_bytes)
        model = parse_resource(data, kind=self.kind.kind)
        obj = new_object(model, utcnow())
        name = model.metadata.name
        if self.kind is PROJECTS:
            await collisions.check_project(request.app[STORE], name, obj["spec"])
        try:
            stored = await request.app[STORE].create(obj)
        except AlreadyExists:
            raise AlreadyExists(f'{self.noun} "{name}" already exists') from None
        _observe(request, stored)
        log.info(f"{self.noun}.created", name=name, revision=_revision_of(stored))
        return json_response(
            stored, 201, headers={"Location": f"/api/v1/{self.kind.plural}/{name}"}
        )

    # GET /api/v1/{plural}/{name}
    async def get(self, request: web.Request) -> web.Response:
        obj = await _get_or_404(request, self.kind, request.match_info["name"])
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
        result = await request.app[STORE].list(
            self.kind.kind, selector, limit=limit, continue_token=token
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
        config = request.app[CONFIG]
        name = request.match_info["name"]
        data = _with_path_name(
            await read_document(request, max_bytes=config.max_body_bytes), name
        )
        model = parse_resource(data, kind=self.kind.kind)
        _check_name(model, name)
        spec = model.spec.to_wire()
        if self.kind is PROJECTS:
            await collisions.check_project(request.app[STORE], name, spec)
        labels = dict(model.metadata.labels)
        annotations = dict(model.metadata.annotations)
        now = utcnow()

        def mutate(current: Obj) -> Obj | None:
            meta = current.setdefault("metadata", {})
            spec_changed = current.get("spec") != spec
            if spec_changed and self.kind is PROJECTS and _is_deleting(current):
                # Labels and annotations may still change (e.g. a re-applied manifest).
                phase = (current.get("status") or {}).get("phase")
                raise Conflict(
                    f'project "{name}" is being deleted (phase {phase}): '
                    "its spec can no longer change"
                )
            if (
                not spec_changed
                and (meta.get("labels") or {}) == labels
                and (meta.get("annotations") or {}) == annotations
            ):
                return None  # nothing to write: no new revision, no event
            current["spec"] = spec
            meta["labels"] = labels
            meta["annotations"] = annotations
            # The store bumps metadata.generation when the spec changed.
            if spec_changed and self.kind is PROJECTS:
                status = ProjectStatus.model_validate(current.get("status") or {})
                if lifecycle.redeploy_after_spec_change(status, name, now):
                    current["status"] = status.to_wire()
            return current

        stored = await _update_or_404(
            request, self.kind, name, mutate, model.metadata.resource_version
        )
        return json_response(stored)

    # PUT /api/v1/{plural}/{name}/status
    async def update_status(self, request: web.Request) -> web.Response:
        config = request.app[CONFIG]
        name = request.match_info["name"]
        data = _with_path_name(
            await read_document(request, max_bytes=config.max_body_bytes), name
        )
        model = parse_resource(data, kind=self.kind.kind)
        _check_name(model, name)
        now = utcnow()

        def mutate(current: Obj) -> Obj | None:
            old_wire = current.get("status") or {}
            new_status: ProjectStatus | NodeStatus
            if isinstance(model, Project):
                old = ProjectStatus.model_validate(old_wire)
                new_status = lifecycle.replace_status(old, model.status, name, now)
            else:
                new_status = model.status.model_copy(deep=True)
                lifecycle.sync_ready_condition(new_status, now)
            new_wire = new_status.to_wire()
            if new_wire == old_wire:
                return None
            current["status"] = new_wire
            return current

        stored = await _update_or_404(
            request, self.kind, name, mutate, model.metadata.resource_version
        )
        return json_response(stored)


def _multi(request: web.Request, name: str) -> list[str]:
    """A repeatable query parameter; each occurrence may also be a comma-separated list."""
    out: list[str] = []
    for value in request.query.getall(name, []):
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


# -- project-only routes -------------------------------------------------------------------


class _Retry(Conflict):
    """The project changed between our read and our write in a way that changes the plan."""


async def patch_project_status(request: web.Request) -> web.Response:
    """``PATCH /api/v1/projects/{name}/status`` ``{phase, reason?, message?, nodeRef?}``."""
    config = request.app[CONFIG]
    name = request.match_info["name"]
    data = await read_document(request, max_bytes=config.max_body_bytes)
    patch = validate_body(PhasePatch, data, what="status patch")
    if patch.node_ref is not None and patch.phase is not ProjectPhase.SCHEDULED:
        raise Invalid(
            "status patch is invalid",
            [FieldError(field="nodeRef", message="may only be set with phase Scheduled")],
        )
    now = utcnow()

    def mutate(current: Obj) -> Obj | None:
        status = ProjectStatus.model_validate(current.get("status") or {})
        changed = lifecycle.set_phase(
            status,
            name,
            patch.phase,
            reason=patch.reason,
            message=patch.message,
            now=now,
            node_ref=patch.node_ref,
        )
        if not changed:
            return None
        current["status"] = status.to_wire()
        return current

    await _update_or_404(request, PROJECTS, name, mutate, patch.resource_version)
    return web.Response(status=204)


async def delete_project(request: web.Request) -> web.Response:
    """``DELETE /api/v1/projects/{name}[?force=true]``.

    * ``force``: removed at once in any phase (204); its containers may be orphaned.
    * no node (or already Terminated): removed at once (204).
    * on a node: ``deletionTimestamp`` + phase Terminating (202, body = the object); the
      agent removes the containers, reports Terminated, the termination controller deletes.
    Both decisions are re-checked atomically by the store (precondition / mutator), and
    redone if the project moved in between (e.g. the scheduler placed it meanwhile).
    """
    store = request.app[STORE]
    name = request.match_info["name"]
    force = bool_param(request, "force")
    if force:
        try:
            old = await store.delete(PROJECTS.kind, name)
        except NotFound:
            raise NotFound(f'project "{name}" not found') from None
        status = old.get("status") or {}
        if status.get("nodeRef") and status.get("phase") != ProjectPhase.TERMINATED:
            log.warning(
                "project.force_deleted",
                name=name,
                node=status.get("nodeRef"),
                note="its containers on the node may be left behind",
            )
        _observe(request, old)
        return web.Response(status=204)

    now = utcnow()

    def on_node(obj: Obj) -> bool:
        status = obj.get("status") or {}
        return bool(status.get("nodeRef")) and status.get("phase") != ProjectPhase.TERMINATED

    def require_no_node(current: Obj) -> None:
        if on_node(current):
            raise _Retry("project was placed on a node meanwhile")

    def terminate(current: Obj) -> Obj | None:
        if not on_node(current):
            raise _Retry("project left its node meanwhile")
        meta = current.setdefault("metadata", {})
        changed = False
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = _ts(now)
            changed = True
        status = ProjectStatus.model_validate(current.get("status") or {})
        if lifecycle.begin_termination(status, name, now):
            current["status"] = status.to_wire()
            changed = True
        return current if changed else None

    for _ in range(5):
        current = await _get_or_404(request, PROJECTS, name)
        try:
            if not on_node(current):
                old = await store.delete(PROJECTS.kind, name, precondition=require_no_node)
                _observe(request, old)
                log.info("project.deleted", name=name)
                return web.Response(status=204)
            stored = await _update_or_404(request, PROJECTS, name, terminate)
        except _Retry:
            continue
        except NotFound:
            raise NotFound(f'project "{name}" not found') from None
        log.info("project.terminating", name=name, node=stored["status"].get("nodeRef"))
        return json_response(stored, 202)
    raise Conflict(f'project "{name}" keeps changing; retry the delete')


# -- node-only routes ----------------------------------------------------------------------


async def delete_node(request: web.Request) -> web.Response:
    """``DELETE /api/v1/nodes/{name}[?force=true]``: 409 while projects occupy the node.

    The occupancy check and the delete are two steps (they concern different objects); a
    project scheduled onto the node in between is moved off by the rescheduler, which
    treats a missing node like a NotReady one.
    """
    store = request.app[STORE]
    name = request.match_info["name"]
    force = bool_param(request, "force")
    await _get_or_404(request, NODES, name)
    if not force:
        assigned = await store.list(
            PROJECTS.kind, Selector.parse(any_of={"status.nodeRef": {name}})
        )
        busy = sorted(
            p["metadata"]["name"]
            for p in assigned.items
            if (p.get("status") or {}).get("phase") in OCCUPYING_PHASES
        )
        if busy:
            shown = ", ".join(busy[:10]) + (", ..." if len(busy) > 10 else "")
            raise Conflict(
                f'cannot delete node "{name}": {len(busy)} project(s) still assigned '
                f"({shown}); delete them first or use ?force=true"
            )
    try:
        old = await store.delete(NODES.kind, name)
    except NotFound:
        raise NotFound(f'node "{name}" not found') from None
    _observe(request, old)
    log.info("node.deleted", name=name, force=force)
    return web.Response(status=204)


async def node_heartbeat(request: web.Request) -> web.Response:
    """``POST /api/v1/nodes/{name}/heartbeat``: 204; 404 tells the agent to re-register."""
    config = request.app[CONFIG]
    name = request.match_info["name"]
    data = await read_document(request, max_bytes=config.max_body_bytes, allow_empty=True)
    hb = validate_body(Heartbeat, data, what="heartbeat")
    now = utcnow()

    def mutate(current: Obj) -> Obj:
        status = NodeStatus.model_validate(current.get("status") or {})
        lifecycle.apply_heartbeat(status, hb, now)
        current["status"] = status.to_wire()
        return current

    await _update_or_404(request, NODES, name, mutate)
    return web.Response(status=204)
