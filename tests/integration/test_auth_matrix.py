"""Every route x every kind of caller: 2xx-or-handler-answer / 401 / 403, generated from the
route table (a route added without an authorization rule fails here).

The expectation is written down independently of ``caravanserai/server/authz.py``: it is the
policy of issue 11 (view / edit / admin, join tokens, the node authorizer), not a copy of it.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import auth_support
import pytest
from auth_support import Secured
from server_support import manifest, node_manifest

from caravanserai.api.event import new_event
from caravanserai.server.access import ROUTE_ACCESS, Access
from caravanserai.server.app import route_table
from caravanserai.server.routing import RouteSpec

secured = pytest.fixture(auth_support.serve_secured, name="secured")

ROUTES = route_table()
# The policy of issue 11 as (resource, verb) sets; a new route's resource goes here too.
READ = {(r, v) for r in ("projects", "nodes", "leases", "events") for v in ("get", "list", "watch")}
VIEW = READ | {
    ("projects/logs", "get"), ("metrics", "get"), ("whoami", "get"), ("nodes/heartbeat", "get"),
}
EDIT = VIEW | {("projects", v) for v in ("create", "update", "patch", "delete")} | {
    ("projects/portforward", "create"), ("projects/exec", "create"), ("events", "create"),
}
USER_RULES: dict[str, set[tuple[str, str]] | None] = {
    "view": VIEW,
    "edit": EDIT,
    "admin": None,  # everything
    "join": {("nodes/join", "create"), ("whoami", "get")},
}
# What a node may do to its own Node and the projects bound to it; nothing on anyone else's.
NODE_OWN = {
    ("nodes", "get"), ("nodes", "create"), ("nodes", "update"), ("nodes/heartbeat", "create"),
    ("nodes/heartbeat", "get"),
    ("projects", "list"), ("projects", "watch"), ("projects", "get"),
    ("projects/status", "update"), ("projects/status", "patch"), ("whoami", "get"),
    ("events", "create"),
}
NODE_ANY = {("whoami", "get")}
PUBLIC = ["healthz", "openapi", "readyz", "version"]
OTHER = {"node-a": ("node-b", "pb"), "node-b": ("node-a", "pa")}
OWN = {"node-a": ("node-a", "pa"), "node-b": ("node-b", "pb")}
_serial = itertools.count()


def rule(route: RouteSpec) -> Access:
    return ROUTE_ACCESS[route.operation_id]


def test_every_route_has_an_authorization_rule() -> None:
    """A route without a rule (or a rule for no route) fails here: add one line to
    ``caravanserai/server/access.py ROUTE_ACCESS``."""
    ids = [r.operation_id for r in ROUTES]
    missing = [f"{r.method} {r.path} ({r.operation_id})" for r in ROUTES
               if r.operation_id not in ROUTE_ACCESS]
    assert missing == []
    assert sorted(set(ROUTE_ACCESS) - set(ids)) == []
    assert sorted(i for i in ids if ROUTE_ACCESS[i].public) == PUBLIC


def expected(who: str | None, route: RouteSpec, verb: str, target: str) -> str:
    access = rule(route)
    if access.public or access.resource == "metrics":
        return "ok"  # /metrics is anonymous by default (CARA_METRICS_ANONYMOUS)
    if who is None:
        return "401"
    if who in USER_RULES:
        rules = USER_RULES[who]
        return "ok" if rules is None or (access.resource, verb) in rules else "403"
    allowed = NODE_OWN if target == "own" else NODE_ANY
    return "ok" if (access.resource, verb) in allowed else "403"


async def request_for(
    secured: Secured, who: str | None, route: RouteSpec, target: str
) -> tuple[str, str, Any, dict[str, str]]:
    """A request that exercises ``route`` without changing what later requests depend on."""
    access = rule(route)
    n = next(_serial)
    node, project = (OWN if target == "own" else OTHER).get(who or "", ("node-a", "pa"))
    is_node = who in OWN
    params: dict[str, str] = {}
    body: Any = None
    name = {"projects": project, "nodes": node, "leases": "test-lease"}.get(
        route.tag, "no-such-token"
    )
    if route.method == "DELETE":
        # Users delete something that does not exist (404 when allowed); nodes aim at real
        # objects (a node may never delete, so nothing happens).
        name = name if is_node else {"projects": "no-such-project", "nodes": "no-such-node",
                                     "tokens": "no-such-token", "leases": "no-such-lease",
                                     "events": "no-such-event"}[
                                         route.tag]
    if access.resource == "nodes/join":
        name = f"joiner{n}"
    if route.method == "GET" and route.path.endswith("/projects") and is_node:
        params["fieldSelector"] = f"status.nodeRef={node}"
    if access.resource == "projects/portforward":
        params["port"] = "80"
    if access.resource == "projects/exec":
        params["command"] = "true"
    if route.method == "POST" and route.path == "/api/v1/projects":
        body = manifest(f"new{n}")
    elif route.method == "POST" and route.path == "/api/v1/nodes":
        body = node_manifest(node if is_node else f"new-node{n}")
    elif route.method == "POST" and route.path == "/api/v1/tokens":
        body = {"name": f"tok{n}", "role": "view"}
    elif route.method == "POST" and route.path == "/api/v1/leases":
        body = {"apiVersion": "caravanserai/v1", "kind": "Lease",
                "metadata": {"name": f"lease{n}"}, "spec": {}}
    elif route.method == "POST" and route.path == "/api/v1/events":
        # About the target's project: a node's own (allowed) or another node's (403).
        body = new_event("Project", project, "Matrix", f"request {n}", component="matrix",
                         now=datetime.now(UTC)).to_wire()
    elif route.method == "POST" and route.path == "/api/v1/bindings":
        body = {"items": []}
    elif access.resource == "nodes/heartbeat":
        body = {"state": "Ready"}
    elif route.method == "PATCH":
        body = {"phase": "Running"}
    elif route.method == "PUT":
        # The stored object itself: an allowed write changes nothing.
        base = route.path.replace("/status", "").replace("{name}", name)
        body = await secured.admin("GET", base)
    path = route.path.replace("{name}", name)
    return route.method, path, body, params


IDENTITIES = [None, "view", "edit", "admin", "join", "node-a"]


@pytest.mark.parametrize("who", IDENTITIES, ids=lambda w: w or "anonymous")
async def test_route_matrix(secured: Secured, who: str | None) -> None:
    wrong: list[str] = []
    targets = ("own", "other") if who in OWN else ("own",)
    for route, target in itertools.product(ROUTES, targets):
        access = rule(route)
        for watch in ((False, True) if access.verb == "list" else (False,)):
            method, path, body, params = await request_for(secured, who, route, target)
            verb = access.verb
            if watch:
                params.update(watch="true")
                verb = "watch"
            status, answer, _ = await secured.as_(who, method, path, body, params=params)
            want = expected(who, route, verb, target)
            got = str(status) if status in (401, 403) else "ok"
            if status >= 500 and status not in (502, 503):  # a relay to a closed port: 502
                wrong.append(f"{method} {path} {params} ({target}): {status} {answer}")
            if got != want:
                wrong.append(f"{method} {path} {params} ({target}): want {want}, got {status} "
                             f"{answer if status >= 400 else ''}")
            if status == 403 and who in USER_RULES:
                # The problem names the caller's role and the verb.
                assert answer["status"] == 403, answer
                assert verb in answer["detail"] and who in answer["detail"], answer
            elif status == 403:
                assert answer["status"] == 403 and who in answer["detail"], answer
    assert wrong == []


async def test_nothing_changed_by_refused_requests(secured: Secured) -> None:
    """The refusals above leave every object as it was (the matrix's refused writes)."""
    before = await secured.admin("GET", "/api/v1/projects")
    for who in ("view", "node-a", "join"):
        for method, path in (("DELETE", "/api/v1/projects/pb"), ("DELETE", "/api/v1/nodes/node-b"),
                             ("PATCH", "/api/v1/projects/pb/status")):
            status, _, _ = await secured.as_(who, method, path, {"phase": "Failed"}
                                             if method == "PATCH" else None)
            assert status == 403, (who, method, path)
    after = await secured.admin("GET", "/api/v1/projects")
    assert after["items"] == before["items"]
