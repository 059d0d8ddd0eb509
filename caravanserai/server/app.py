"""The aiohttp application of cara-server: route table, middlewares, lifecycle hooks.

``create_app(config, store)`` is what ``cara-server`` runs and what tests serve; the caller
owns the store (opens it before, closes it after). Background work that lives with the
server, e.g. the controller manager (issue 4), plugs in through ``extra_startup``: each is an
aiohttp cleanup context, an async generator taking the app, that starts things before its
``yield`` and stops them after::

    async def controllers(app: web.Application) -> AsyncIterator[None]:
        manager = Manager(app[STORE]); await manager.start()
        yield
        await manager.stop()

    app = create_app(config, store, extra_startup=[controllers])
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

import caravanserai
from caravanserai.api.base import API_VERSION
from caravanserai.api.binding import BindingList, BindingResultList
from caravanserai.api.event import Event, EventList
from caravanserai.api.lease import Lease, LeaseList
from caravanserai.api.node import Heartbeat, Node, NodeHeartbeat, NodeList
from caravanserai.api.problems import Unavailable
from caravanserai.api.project import Project, ProjectList, ProjectPhase
from caravanserai.api.resources import NODES, PROJECTS, ResourceKind
from caravanserai.api.selectors import FIELD_SELECTOR_PATTERN, LABEL_SELECTOR_PATTERN
from caravanserai.api.watch import WatchEvent
from caravanserai.informer.recorder import EventRecorder
from caravanserai.logging import get_logger
from caravanserai.registry import Registries
from caravanserai.server.access import ROUTE_ACCESS, Access
from caravanserai.server.authn import IDENTITY, TOKENS, Authenticator
from caravanserai.server.authz import Authorizer, auth_middleware
from caravanserai.server.config import ServerConfig
from caravanserai.server.dryrun import DryRunNodeLeases, DryRunStore, dry_run_middleware
from caravanserai.server.httputil import json_response
from caravanserai.server.inprocess import InProcessClient
from caravanserai.server.inputs import request_text_middleware
from caravanserai.server.metrics import METRICS_CONTENT_TYPE, Metrics, observe_middleware
from caravanserai.server.models import PhasePatch, VersionInfo, WhoAmI
from caravanserai.server.openapi import build_openapi
from caravanserai.server.problems import problem_middleware
from caravanserai.server.relay import AGENT_SSL, relay_routes
from caravanserai.server.relay_exec import exec_routes
from caravanserai.server.routes_events import (
    delete_event,
    get_event,
    list_events,
    record_event,
)
from caravanserai.server.routes_patch import MERGE_PATCH, patch_handler
from caravanserai.server.routes_resources import (
    MAX_LIMIT,
    LeaseHandlers,
    ResourceHandlers,
    create_bindings,
    delete_node,
    delete_project,
    get_node_heartbeat,
    node_heartbeat,
    patch_project_status,
)
from caravanserai.server.routes_tokens import token_routes
from caravanserai.server.routing import OBJECT_NAME, Param, Reply, RouteSpec, register
from caravanserai.server.state import CONFIG, METRICS, RECORDER, REGISTRIES, STORE, WATCHES
from caravanserai.server.ui import add_ui_routes
from caravanserai.server.watch_stream import NDJSON, WatchRegistry
from caravanserai.store.node_leases import NodeLeaseStore
from caravanserai.store.postgres import PostgresStore
from caravanserai.store.tokens import CachingTokenStore
from caravanserai.store.types import Store
from caravanserai.tls import client_context

log = get_logger("caravanserai.server")

CleanupContext = Callable[[web.Application], AsyncIterator[None]]
OPENAPI_KEY = web.AppKey("openapi", dict)

# How long readyz waits for the database before declaring the server not ready.
READY_TIMEOUT = 2.0


# -- system handlers -----------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP (as the original: 200, text ``OK``)."""
    return web.Response(text="OK")


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when PostgreSQL answers, 503 problem otherwise."""
    if request.app[WATCHES].closing:
        raise Unavailable("server is shutting down")
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            revision = await request.app[STORE].current_revision()
    except TimeoutError:
        raise Unavailable(f"database did not answer within {READY_TIMEOUT:g}s") from None
    except Exception as exc:  # any driver error means "not ready", never a 500
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Unavailable(f"database unreachable: {first}") from None
    request.app[METRICS].observe_revision(revision)
    return web.Response(text="OK")


async def version(request: web.Request) -> web.Response:
    info = VersionInfo(
        version=caravanserai.__version__,
        api_version=API_VERSION,
        python=platform.python_version(),
    )
    return json_response(info.to_wire())


async def whoami(request: web.Request) -> web.Response:
    """The caller's identity as the server sees it (the dashboard hides writes for view)."""
    identity = request.get(IDENTITY)
    if identity is None:  # metrics-style anonymous access never reaches here
        return json_response(WhoAmI(name="anonymous", role="none").to_wire())
    info = WhoAmI(name=identity.name, role=identity.role.value, node=identity.node)
    return json_response(info.to_wire())


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi_handler(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_KEY])


# -- the route table -----------------------------------------------------------------------

_NAME = Param("name", "path", OBJECT_NAME, "The object's name (a DNS label).", True)
_LIST_PARAMS = (
    Param(
        "labelSelector",
        "query",
        {"type": "string", "pattern": f"^{LABEL_SELECTOR_PATTERN}$"},
        "Label selector: `k=v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-ANDed.",
    ),
    Param(
        "fieldSelector",
        "query",
        {"type": "string", "pattern": f"^{FIELD_SELECTOR_PATTERN}$"},
        "Field selector over `metadata.name`, `status.phase`, `status.nodeRef`, "
        "`status.state` with `=`, `==`, `!=`.",
    ),
    Param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        "Page size; the response's `metadata.continue` fetches the next page.",
    ),
    Param(
        "continue",
        "query",
        {"type": "string"},
        "Token of the next page (all pages are consistent at the first page's revision).",
    ),
    Param(
        "watch",
        "query",
        {"type": "boolean"},
        "Stream events (newline-delimited JSON) instead of returning a list.",
    ),
    Param(
        "resourceVersion",
        "query",
        {"type": "string", "pattern": "^[0-9]*$"},
        "Watch: stream events after this revision (omitted or 0: current objects first).",
    ),
    Param(
        "allowWatchBookmarks",
        "query",
        {"type": "boolean"},
        "Watch: send BOOKMARK events carrying the current revision while idle.",
    ),
    Param(
        "timeoutSeconds",
        "query",
        {"type": "integer", "minimum": 0},
        "Watch: end the stream cleanly after this many seconds (capped by the server).",
    ),
)
_PROJECT_FILTERS = (
    Param(
        "phase",
        "query",
        {"type": "string", "enum": [p.value for p in ProjectPhase]},
        "Only projects in one of these phases (repeatable, OR-ed).",
        repeated=True,
    ),
    Param(
        "nodeRef",
        "query",
        {"type": "string"},
        "Only projects on one of these nodes (repeatable, OR-ed).",
        repeated=True,
    ),
)
_FORCE = Param(
    "force", "query", {"type": "boolean"}, "Remove at once, without the graceful teardown."
)
_WRITE_PROBLEMS = (400, 404, 405, 409, 413, 415, 422)


def _resource_routes(
    kind: ResourceKind,
    model: type[Project] | type[Node],
    list_model: type[ProjectList] | type[NodeList],
) -> list[RouteSpec]:
    h = ResourceHandlers(kind)
    base = f"/api/v1/{kind.plural}"
    name = kind.kind
    list_params = (*_LIST_PARAMS, *(_PROJECT_FILTERS if kind is PROJECTS else ()))
    return [
        RouteSpec(
            "POST",
            base,
            h.create,
            f"create{name}",
            f"Create a {name}",
            kind.plural,
            body=model,
            replies=(Reply.json(201, f"The stored {name}", model),),
            problems=_WRITE_PROBLEMS,
            description=(
                "Client-supplied status and server-managed metadata are ignored"
                + ("; status.phase is always Pending." if kind is PROJECTS else ".")
            ),
        ),
        RouteSpec(
            "GET",
            base,
            h.list,
            f"list{name}s",
            f"List or watch {kind.plural}",
            kind.plural,
            params=list_params,
            replies=(
                Reply(
                    200,
                    f"The {name}s (or, with watch=true, a stream of watch events, one JSON "
                    "object per line)",
                    {"application/json": list_model, NDJSON: WatchEvent},
                ),
            ),
            # 504: a watch from a revision this server has not reached (Retry-After: 1).
            problems=(400, 404, 405, 410, 504),
        ),
        RouteSpec(
            "GET",
            f"{base}/{{name}}",
            h.get,
            f"get{name}",
            f"Get a {name}",
            kind.plural,
            params=(_NAME,),
            replies=(Reply.json(200, f"The {name}", model),),
            problems=(400, 404, 405),
        ),
        RouteSpec(
            "PUT",
            f"{base}/{{name}}",
            h.update,
            f"replace{name}",
            f"Replace a {name}'s spec, labels and annotations",
            kind.plural,
            params=(_NAME,),
            body=model,
            replies=(Reply.json(200, f"The stored {name}", model),),
            problems=_WRITE_PROBLEMS,
            description=(
                "metadata.resourceVersion, when set, is a precondition (409 if stale). "
                "Status is ignored (use the status subresource)."
                + (
                    " Refused (409) while the project is being deleted; a spec change on a "
                    "Failed project redeploys it."
                    if kind is PROJECTS
                    else ""
                )
            ),
        ),
        RouteSpec(
            "PATCH",
            f"{base}/{{name}}",
            patch_handler(h),
            f"patch{name}",
            f"Patch a {name}'s spec, labels and annotations (JSON merge patch)",
            kind.plural,
            params=(_NAME,),
            replies=(Reply.json(200, f"The stored {name}", model),),
            problems=_WRITE_PROBLEMS,
            description=(
                f"RFC 7396 merge patch ({MERGE_PATCH}) of metadata.labels, "
                "metadata.annotations and spec; null removes a key. "
                "metadata.resourceVersion, when set, is a precondition (409 if stale). "
                "The result is validated as a PUT body; status cannot be patched."
            ),
            extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        MERGE_PATCH: {"schema": {"$ref": f"#/components/schemas/{name}MergePatch"}}
                    },
                }
            },
        ),
        RouteSpec(
            "PUT",
            f"{base}/{{name}}/status",
            h.update_status,
            f"replace{name}Status",
            f"Replace a {name}'s status",
            kind.plural,
            params=(_NAME,),
            body=model,
            replies=(Reply.json(200, f"The stored {name}", model),),
            problems=_WRITE_PROBLEMS,
            description=(
                "Only status (and the metadata.resourceVersion precondition) is used."
                + (" The phase machine is enforced (409)." if kind is PROJECTS else "")
            ),
        ),
        RouteSpec(
            "DELETE",
            f"{base}/{{name}}",
            delete_project if kind is PROJECTS else delete_node,
            f"delete{name}",
            f"Delete a {name}",
            kind.plural,
            params=(_NAME, _FORCE),
            replies=(
                (
                    Reply(204, "Deleted"),
                    Reply.json(202, "Terminating: the node's agent tears it down first", model),
                )
                if kind is PROJECTS
                else (Reply(204, "Deleted"),)
            ),
            problems=(400, 404, 405, 409),
        ),
    ]


def _lease_routes() -> list[RouteSpec]:
    h = LeaseHandlers()
    base = "/api/v1/leases"
    precondition = "metadata.resourceVersion, when set, is a precondition (409 if stale)."
    return [
        RouteSpec(
            "POST", base, h.create, "createLease", "Create a Lease", "leases", body=Lease,
            replies=(Reply.json(201, "The stored Lease", Lease),), problems=_WRITE_PROBLEMS,
        ),
        RouteSpec(
            "GET", base, h.list, "listLeases", "List leases", "leases",
            params=_LIST_PARAMS[:2],
            replies=(Reply.json(200, "The Leases", LeaseList),), problems=(400, 404, 405),
        ),
        RouteSpec(
            "GET", f"{base}/{{name}}", h.get, "getLease", "Get a Lease", "leases",
            params=(_NAME,), replies=(Reply.json(200, "The Lease", Lease),),
            problems=(400, 404, 405),
        ),
        RouteSpec(
            "PUT", f"{base}/{{name}}", h.update, "replaceLease",
            "Acquire, renew or release a Lease", "leases", params=(_NAME,), body=Lease,
            replies=(Reply.json(200, "The stored Lease", Lease),), problems=_WRITE_PROBLEMS,
            description=precondition,
        ),
        RouteSpec(
            "DELETE", f"{base}/{{name}}", h.delete, "deleteLease", "Delete a Lease", "leases",
            params=(_NAME,), replies=(Reply(204, "Deleted"),), problems=(400, 404, 405, 409),
        ),
    ]


_EVENT_FIELDS = Param(
    "fieldSelector",
    "query",
    {"type": "string", "pattern": f"^{FIELD_SELECTOR_PATTERN}$"},
    "Field selector over `involvedObject.kind`, `involvedObject.name`, `metadata.name` "
    "with `=`, `==`, `!=`.",
)


def _event_routes() -> list[RouteSpec]:
    base = "/api/v1/events"
    list_params = (_LIST_PARAMS[0], _EVENT_FIELDS, *_LIST_PARAMS[2:])
    return [
        RouteSpec(
            "POST", base, record_event, "createEvent", "Record an Event (aggregating)",
            "events", body=Event,
            replies=(
                Reply.json(201, "A new Event", Event),
                Reply.json(200, "Aggregated into the stored Event of the same name", Event),
            ),
            problems=_WRITE_PROBLEMS,
            description=(
                "An upsert: when an Event of the same name exists and records the same "
                "occurrence (involvedObject, type, reason, message, reporting component and "
                "instance), its count grows by this body's count and its lastTimestamp moves "
                "forward; a different occurrence under that name is a 409. Absent timestamps "
                "are the server's time."
            ),
        ),
        RouteSpec(
            "GET", base, list_events, "listEvents", "List or watch events", "events",
            params=list_params,
            replies=(
                Reply(
                    200,
                    "The Events (or, with watch=true, a stream of watch events, one JSON "
                    "object per line)",
                    {"application/json": EventList, NDJSON: WatchEvent},
                ),
            ),
            problems=(400, 404, 405, 410, 504),
        ),
        RouteSpec(
            "GET", f"{base}/{{name}}", get_event, "getEvent", "Get an Event", "events",
            params=(_NAME_EVENT,), replies=(Reply.json(200, "The Event", Event),),
            problems=(400, 404, 405),
        ),
        RouteSpec(
            "DELETE", f"{base}/{{name}}", delete_event, "deleteEvent", "Delete an Event",
            "events", params=(_NAME_EVENT,), replies=(Reply(204, "Deleted"),),
            problems=(400, 404, 405, 409),
        ),
    ]


_NAME_EVENT = Param(
    "name", "path", {"type": "string"}, "The event's name (a DNS subdomain).", True
)


def route_table() -> list[RouteSpec]:
    """Every route of the server (the router and the OpenAPI document are built from it)."""
    return [
        RouteSpec(
            "GET", "/api/healthz", healthz, "healthz", "Liveness", "system",
            replies=(Reply(200, "Alive", {"text/plain": {"type": "string"}}),),
            problems=(404, 405),
        ),
        RouteSpec(
            "GET", "/api/readyz", readyz, "readyz", "Readiness (database reachable)", "system",
            replies=(Reply(200, "Ready", {"text/plain": {"type": "string"}}),),
            problems=(404, 405),
        ),
        RouteSpec(
            "GET", "/api/v1/version", version, "version", "Server version", "system",
            replies=(Reply.json(200, "Versions", VersionInfo),),
            problems=(404, 405),
        ),
        RouteSpec(
            "GET", "/api/v1/openapi.json", openapi_handler, "openapi", "This document", "system",
            replies=(Reply.json(200, "The OpenAPI 3.1 document", {"type": "object"}),),
            problems=(404, 405),
        ),
        RouteSpec(
            "GET", "/api/v1/whoami", whoami, "whoami", "Who the caller is", "system",
            replies=(Reply.json(200, "The caller's token name, role and node", WhoAmI),),
            problems=(401, 404, 405),
        ),
        RouteSpec(
            "GET", "/metrics", metrics_handler, "metrics", "Prometheus metrics", "system",
            replies=(Reply(200, "Text exposition format", {"text/plain": {"type": "string"}}),),
            problems=(404, 405),
        ),
        *_resource_routes(PROJECTS, Project, ProjectList),
        *relay_routes(),
        *exec_routes(),
        RouteSpec(
            "PATCH",
            "/api/v1/projects/{name}/status",
            patch_project_status,
            "patchProjectPhase",
            "Move a project to another phase",
            "projects",
            params=(_NAME,),
            body=PhasePatch,
            replies=(Reply(204, "Applied (or already so)"),),
            problems=_WRITE_PROBLEMS,
            description=(
                "Enforces the phase machine (409 for a forbidden transition such as "
                "Terminating to Running), appends to status.history and updates the Phase "
                "condition."
            ),
        ),
        RouteSpec(
            "POST",
            "/api/v1/bindings",
            create_bindings,
            "createBindings",
            "Bind Pending projects to nodes (one transaction)",
            "projects",
            body=BindingList,
            replies=(Reply.json(200, "One result per binding, in order", BindingResultList),),
            problems=(400, 405, 413, 415, 422),
            description=(
                "Each binding moves one Pending project to Scheduled on its node with its own "
                "revision and event; resourceVersion, when set, is its precondition. A "
                "binding that is stale, not Pending or names a missing project is skipped "
                "and reported (outcome Conflict/NotFound/Invalid); the others still bind."
            ),
        ),
        *_resource_routes(NODES, Node, NodeList),
        *_lease_routes(),
        *token_routes(),
        *_event_routes(),
        RouteSpec(
            "POST",
            "/api/v1/nodes/{name}/heartbeat",
            node_heartbeat,
            "nodeHeartbeat",
            "Record a node heartbeat",
            "nodes",
            params=(_NAME,),
            body=Heartbeat,
            body_required=False,
            replies=(Reply(204, "Recorded"),),
            problems=(400, 404, 405, 413, 415, 422),
            description=(
                "Records the heartbeat (server clock) and merges the reported fields. An "
                "admin's Draining state is kept (only a status PUT clears it). A heartbeat "
                "that changes nothing of a Ready node renews its lease only: the Node keeps "
                "its resourceVersion, and status.lastHeartbeat is refreshed at least once a "
                "minute (GET this path for the latest)."
            ),
        ),
        RouteSpec(
            "GET",
            "/api/v1/nodes/{name}/heartbeat",
            get_node_heartbeat,
            "getNodeHeartbeat",
            "When the node last heartbeated",
            "nodes",
            params=(_NAME,),
            replies=(Reply.json(200, "The node's latest heartbeat (lastHeartbeat absent: none yet)",
                                NodeHeartbeat),),
            problems=(400, 404, 405),
        ),
    ]


# -- middlewares ---------------------------------------------------------------------------


_TIMEOUT = web.RequestKey("request_timeout", asyncio.Timeout)


def _timeout_middleware(config: ServerConfig) -> Middleware:
    """Bound every request until its response starts: a stuck handler answers 503.

    Streams (watches, log follows, port-forward WebSockets) are bounded only up to their
    first byte: preparing a response lifts the deadline (``_lift_timeout``), after which
    they run on their own terms (``timeoutSeconds``, the client going away, shutdown).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            async with asyncio.timeout(config.request_timeout) as deadline:
                request[_TIMEOUT] = deadline
                try:
                    return await handler(request)
                finally:
                    del request[_TIMEOUT]
        except TimeoutError:
            raise Unavailable(
                f"request did not complete within {config.request_timeout:g}s"
            ) from None

    return middleware


async def _lift_timeout(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: a response that starts streaming inside its handler is no longer
    subject to the request deadline (ordinary responses are prepared after the handler)."""
    deadline = request.get(_TIMEOUT)
    if deadline is not None:
        deadline.reschedule(None)


# -- the app -------------------------------------------------------------------------------


def create_app(
    config: ServerConfig,
    store: Store,
    *,
    extra_startup: Sequence[CleanupContext] = (),
    access: Mapping[str, Access] = ROUTE_ACCESS,
) -> web.Application:
    """The cara-server application on an open store (see the module docstring).

    ``access``: the authorization rule of every named route (``access.py``); a route added
    to the app beside the route table needs one too, or it answers 403.
    """
    metrics = Metrics()
    routes = route_table()
    tokens: CachingTokenStore | None = None
    if isinstance(store, PostgresStore):
        tokens = CachingTokenStore(store)
        store.hub.add_tokens_listener(tokens.forget_cached)
    authenticator = Authenticator(
        tokens,
        static_token=config.api_token,
        join_token=config.join_token,
        allow_anonymous=config.insecure_allow_anonymous,
    )
    authorizer = Authorizer(store, config.max_body_bytes, config.metrics_anonymous)
    app = web.Application(
        middlewares=[
            observe_middleware(metrics),
            problem_middleware,
            request_text_middleware,
            _timeout_middleware(config),
            auth_middleware(authenticator, authorizer, access),
            dry_run_middleware,
        ],
        # Bodies are read (and limited) by our own reader, which answers a problem (413).
        client_max_size=config.max_body_bytes,
    )
    app[CONFIG] = config
    # ?dryRun=All: every handler's checks run, the store's write is left out (dryrun.py).
    app[STORE] = cast(Store, DryRunStore(store))
    app[METRICS] = metrics
    # The registries write through app[STORE]: a dry-run request runs every rule of the
    # registry and the store leaves out only the write itself.
    app[REGISTRIES] = Registries(
        app[STORE],
        metrics.observe_revision,
        DryRunNodeLeases(NodeLeaseStore(store)) if isinstance(store, PostgresStore) else None,
    )
    app[WATCHES] = WatchRegistry(cache_bytes=config.watch_cache_bytes // 2)
    if tokens is not None:
        app[TOKENS] = tokens
    agent_ssl = client_context(config.agent_ca)
    if agent_ssl is not None:
        app[AGENT_SSL] = agent_ssl
    app[RECORDER] = EventRecorder(
        InProcessClient(app[REGISTRIES]), "cara-server", platform.node()[:128]
    )
    register(app, routes)
    add_ui_routes(app)
    app[OPENAPI_KEY] = build_openapi(routes)

    async def end_watches(app: web.Application) -> None:
        # on_shutdown runs after the listeners stopped and before in-flight requests are
        # awaited: ending the streams here lets shutdown finish instead of timing out.
        count = len(app[WATCHES])
        app[WATCHES].stop_all()
        log.info("server.shutting_down", open_watches=count)

    async def close_recorder(app: web.Application) -> None:
        await app[RECORDER].aclose()

    app.on_shutdown.append(end_watches)
    app.on_cleanup.append(close_recorder)
    app.on_response_prepare.append(_lift_timeout)
    app.cleanup_ctx.extend(extra_startup)
    return app
