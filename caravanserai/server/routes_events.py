"""``/api/v1/events``: translation only, the rules are :mod:`caravanserai.registry.events`.

``POST`` is the recorders' upsert (201 when the event is new, 200 when it was aggregated
into the stored one of the same name); lists and watches select with label selectors and
the field selectors ``involvedObject.kind`` / ``involvedObject.name`` (also ``metadata.name``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from caravanserai.api.event import EVENTS, Event
from caravanserai.api.selectors import Selector
from caravanserai.server.bodies import read_document, validate_body
from caravanserai.server.httputil import bool_param, int_param, json_response, ordered
from caravanserai.server.state import CONFIG, METRICS, REGISTRIES
from caravanserai.server.watch_stream import serve_watch, watch_params

MAX_LIMIT = 10_000


async def record_event(request: web.Request) -> web.Response:
    """``POST /api/v1/events``: create the event or add its count to the stored one."""
    config = request.app[CONFIG]
    data = await read_document(request, max_bytes=config.max_body_bytes)
    event = validate_body(Event, data, what="event")
    stored, created = await request.app[REGISTRIES].events.record(event)
    name = stored.metadata.name
    return json_response(
        ordered(stored.to_wire()),
        201 if created else 200,
        headers={"Location": f"/api/v1/events/{name}"},
    )


async def get_event(request: web.Request) -> web.Response:
    """``GET /api/v1/events/{name}``."""
    obj = await request.app[REGISTRIES].events.get_stored(request.match_info["name"])
    return json_response(ordered(obj))


async def list_events(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/events`` (also ``?watch=true``)."""
    selector = Selector.parse(
        request.query.get("labelSelector"), request.query.get("fieldSelector")
    )
    params = watch_params(request)
    limit = int_param(request, "limit", minimum=1, maximum=MAX_LIMIT)
    if bool_param(request, "watch"):
        return await serve_watch(request, EVENTS, selector, params)
    result = await request.app[REGISTRIES].events.list_stored(
        selector, limit=limit, continue_token=request.query.get("continue") or None
    )
    request.app[METRICS].observe_revision(result.revision)
    metadata: dict[str, Any] = {"resourceVersion": str(result.revision)}
    if result.continue_token:
        metadata["continue"] = result.continue_token
    return json_response(
        {
            "apiVersion": "caravanserai/v1",
            "kind": "EventList",
            "metadata": metadata,
            "items": [ordered(item) for item in result.items],
        }
    )


async def delete_event(request: web.Request) -> web.Response:
    """``DELETE /api/v1/events/{name}[?resourceVersion=]`` (the TTL controller's write)."""
    await request.app[REGISTRIES].events.delete(
        request.match_info["name"],
        resource_version=request.query.get("resourceVersion") or None,
    )
    return web.Response(status=204)
