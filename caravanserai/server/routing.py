"""One table of routes, used both to register the handlers and to write the OpenAPI document.

Keeping the two in one place means the published document cannot drift from what the
server answers: a route exists in the router if and only if it is documented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from caravanserai.api.validation import DNS_LABEL_MAX, DNS_LABEL_PATTERN

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = type[BaseModel] | dict[str, Any] | None


# The ``{name}`` path parameter: every kind's names are DNS labels (``validate_name``), so
# any other string names no object (404).
OBJECT_NAME: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": DNS_LABEL_MAX,
    "pattern": f"^{DNS_LABEL_PATTERN}$",
}


@dataclass(frozen=True)
class Param:
    """A query or path parameter (``repeated``: may appear several times, OR-ed)."""

    name: str
    location: Literal["query", "path"]
    schema: dict[str, Any]
    description: str
    required: bool = False
    repeated: bool = False


@dataclass(frozen=True)
class Reply:
    """One documented response: status, description and body schema per media type."""

    status: int
    description: str
    content: dict[str, Schema] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, description: str, schema: Schema) -> Reply:
        return cls(status, description, {"application/json": schema})


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    params: tuple[Param, ...] = ()
    body: Schema = None
    body_required: bool = True
    replies: tuple[Reply, ...] = ()
    # Problem statuses this route can answer besides the ones every route can (see openapi).
    problems: tuple[int, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def register(app: web.Application, routes: list[RouteSpec]) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler, name=route.operation_id)
