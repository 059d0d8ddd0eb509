"""Small HTTP helpers shared by the route modules: JSON responses and query parameters."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from caravanserai.api.problems import BadRequest
from caravanserai.server.problems import dumps
from caravanserai.store.types import Obj

TRUE_VALUES = frozenset({"true", "1"})
FALSE_VALUES = frozenset({"false", "0", ""})


_TOP_ORDER = ("apiVersion", "kind", "metadata", "spec", "status")
_META_ORDER = (
    "name", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "labels", "annotations",
)


def ordered(obj: Obj) -> Obj:
    """The object with its top-level and metadata keys in the conventional order.

    PostgreSQL's jsonb stores keys sorted by length; people reading ``curl`` output expect
    apiVersion, kind, metadata, spec, status. (Nested keys are left as stored.)
    """
    out = {k: obj[k] for k in _TOP_ORDER if k in obj}
    out.update((k, v) for k, v in obj.items() if k not in out)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        ordered_meta = {k: meta[k] for k in _META_ORDER if k in meta}
        ordered_meta.update((k, v) for k, v in meta.items() if k not in ordered_meta)
        out["metadata"] = ordered_meta
    return out


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, text=dumps(data), content_type="application/json", headers=headers
    )


def bool_param(request: web.Request, name: str) -> bool:
    """``?name=true|1`` / ``false|0``; anything else is a 400 (a typo must not mean false)."""
    value = request.query.get(name)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in TRUE_VALUES:
        return True
    if lowered in FALSE_VALUES:
        return False
    raise BadRequest(f"query parameter {name} must be true or false, not {value!r}")


def int_param(request: web.Request, name: str, *, minimum: int, maximum: int) -> int | None:
    value = request.query.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be an integer, not {value!r}") from None
    if not minimum <= number <= maximum:
        raise BadRequest(f"query parameter {name} must be between {minimum} and {maximum}")
    return number


