"""Request bodies: JSON or YAML, size-limited, turned into plain data or validated models.

Every failure is a typed error the problem middleware renders: 415 for a media type we do not
speak, 413 past the size limit, 400 for bytes that are not a document, 422 (with the field
paths) for a document that is not a valid object.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from caravanserai.api.problems import (
    BadRequest,
    FieldError,
    Invalid,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from caravanserai.api.validation import text_errors

JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})

# YAML parsing is pure Python: big documents go to a thread so the loop keeps serving.
_THREAD_THRESHOLD = 64 * 1024
# A YAML alias expands to a shared object; a "billion laughs" body would then blow up in
# validation. Bodies whose expanded tree is bigger than this are refused.
_MAX_NODES = 200_000

M = TypeVar("M", bound=BaseModel)


def _is_json(content_type: str) -> bool:
    return content_type in JSON_TYPES or content_type.endswith("+json")


# The body, once read: the authorizer may read it before the handler (node rules look at it).
RAW_BODY = web.RequestKey("raw_body", bytes)


async def read_raw(request: web.Request, max_bytes: int) -> bytes:
    """The body bytes; PayloadTooLarge past ``max_bytes`` without reading the rest."""
    if RAW_BODY in request:
        return request[RAW_BODY]
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {max_bytes}")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        buf += chunk
        if len(buf) > max_bytes:
            raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
    request[RAW_BODY] = bytes(buf)
    return request[RAW_BODY]


def _count_nodes(value: Any, budget: int) -> int:
    """Nodes left in ``budget`` after walking ``value``; negative means "too many"."""
    stack = [value]
    while stack:
        budget -= 1
        if budget < 0:
            return budget
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return budget


def _load_yaml(text: str) -> Any:
    yaml = YAML(typ="safe")
    try:
        docs = list(yaml.load_all(text))
    except YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise BadRequest(f"malformed YAML: {' '.join(first[:3])}") from None
    except RecursionError:
        raise BadRequest("malformed YAML: nested too deeply") from None
    if len(docs) != 1:
        raise BadRequest(f"expected one YAML document, got {len(docs)}")
    if _count_nodes(docs[0], _MAX_NODES) < 0:
        raise BadRequest("YAML document expands to too many nodes (aliases?)")
    return docs[0]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _number(text: str) -> float | int:
    """JSON numbers with a zero fractional part are integers (JSON Schema: ``1.0`` is a valid
    ``integer``), so ``"containerPort": 80.0`` means 80, as the published schema says."""
    value = float(text)
    return int(value) if value.is_integer() else value


def _load_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_number)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


async def read_document(
    request: web.Request, *, max_bytes: int, allow_empty: bool = False
) -> Any:
    """Decode the body as JSON (also when no Content-Type is sent) or YAML.

    Returns None for an empty body when ``allow_empty``; otherwise an empty body is a 400.
    """
    has_type = "Content-Type" in request.headers
    content_type = request.content_type.lower() if has_type else "application/json"
    if not (_is_json(content_type) or content_type in YAML_TYPES):
        # Checked before reading, so a large upload of the wrong type is not buffered.
        if allow_empty and not request.body_exists:
            return None
        raise UnsupportedMediaType(
            f"unsupported content type {content_type!r}: send application/json "
            "or application/yaml"
        )
    raw = await read_raw(request, max_bytes)
    if not raw.strip():
        if allow_empty:
            return None
        raise BadRequest("request body is empty")
    if _is_json(content_type):
        document = _load_json(raw)
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("request body is not UTF-8") from None
        if len(raw) > _THREAD_THRESHOLD:
            document = await asyncio.to_thread(_load_yaml, text)
        else:
            document = _load_yaml(text)
    if document is None and allow_empty:
        # An optional body may be left out, but a body that says ``null`` is not an object.
        raise BadRequest("the body must be a JSON object (or left out), not null")
    # Every body, whatever its route (manifests, status, heartbeats): PostgreSQL refuses NUL
    # and lone surrogates, which must be a 422 naming the field, not a DataError 500.
    if errors := text_errors(document):
        raise Invalid("the document holds characters that cannot be stored", errors)
    return document


def render_loc(loc: tuple[Any, ...], prefix: str = "") -> str:
    """``('network', 'agentPort')`` → ``network.agentPort``; indexes as ``[i]``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Pydantic errors as FieldErrors in the wire spelling (the loc uses the aliases)."""
    out = []
    for err in exc.errors(include_url=False):
        message = str(err.get("msg", "invalid value"))
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required"
        out.append(FieldError(field=render_loc(tuple(err["loc"]), prefix), message=message))
    return out


def validate_body(model: type[M], data: Any, *, what: str) -> M:
    """Validate a small request document (heartbeat, phase patch) into ``model``.

    Strict JSON mode, as manifests: ``"80"`` is not an integer. Raises Invalid listing
    every bad field, or BadRequest when ``data`` is not an object.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadRequest(f"the {what} must be a JSON object")
    try:
        return model.model_validate_json(json.dumps(data, default=str), strict=True)
    except ValidationError as exc:
        raise Invalid(f"{what} is invalid", field_errors(exc)) from None
