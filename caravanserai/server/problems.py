"""Errors as RFC 9457 problem details, for every route including unknown ones.

The original answered unknown paths and wrong methods with Go's plain-text bodies and let
store errors become 500s. Here one middleware turns every ``CaravanseraiError`` and every
aiohttp ``HTTPException`` into ``application/problem+json``; anything unexpected becomes a
500 problem with a generic detail, and the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from caravanserai.api.problems import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_TYPE_BASE,
    CaravanseraiError,
    Problem,
    TooLargeResourceVersion,
)
from caravanserai.logging import get_logger

log = get_logger("caravanserai.server")

# aiohttp's HTTPException statuses we map to our problem slugs (the rest get about:blank).
_SLUGS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    408: "request-timeout",
    413: "payload-too-large",
    415: "unsupported-media-type",
    503: "unavailable",
}


RETRY_AFTER_SECONDS = 1


def dumps(data: Any) -> str:
    """Compact JSON, UTF-8 as is (the one encoder of every response)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def problem_response(
    problem: Problem, *, headers: dict[str, str] | None = None
) -> web.Response:
    body = problem.model_dump(mode="json", exclude_none=True)
    return web.Response(
        status=problem.status,
        text=dumps(body),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def error_response(exc: CaravanseraiError, request: web.Request | None = None) -> web.Response:
    # RFC 9110: a 401 names the scheme the client should use.
    headers = {"WWW-Authenticate": 'Bearer realm="caravanserai"'} if exc.status == 401 else None
    if exc.status == 503:
        # Database failover, pool exhausted, shutting down: all pass within seconds, and a
        # retry may land on another replica (RFC 9110 Retry-After, in seconds).
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if isinstance(exc, TooLargeResourceVersion):
        headers = {"Retry-After": "1"}  # as kube-apiserver: the revision may arrive shortly
    return problem_response(
        exc.to_problem(instance=request.path if request else None), headers=headers
    )


def _http_exception_problem(exc: web.HTTPException, request: web.Request) -> Problem:
    status = exc.status
    slug = _SLUGS.get(status)
    if status == 404:
        detail = f"no route for {request.method} {request.path}"
    elif status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        detail = f"method {request.method} is not allowed on {request.path}"
        if allowed:
            detail += f" (allowed: {allowed})"
    elif status == 413:
        detail = "request body is too large"
        if max_size := getattr(exc, "_max_size", None):
            detail += f" (limit {max_size} bytes)"
    else:
        # aiohttp's default text merely repeats the status line ("400: Bad Request").
        text = exc.text or ""
        detail = "" if text.startswith(f"{status}:") else text
    return Problem(
        type=PROBLEM_TYPE_BASE + slug if slug else "about:blank",
        title=exc.reason,
        status=status,
        detail=detail,
        instance=request.path,
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Convert every error into a problem document (see module docstring)."""
    try:
        return await handler(request)
    except CaravanseraiError as exc:
        return error_response(exc, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are not errors
        headers = {}
        if "Allow" in exc.headers:
            headers["Allow"] = exc.headers["Allow"]
        return problem_response(_http_exception_problem(exc, request), headers=headers)
    except (asyncio.CancelledError, ConnectionResetError):
        # The client went away or the server is stopping: nothing to answer.
        raise
    except Exception:
        log.exception("unhandled error", method=request.method, path=request.path)
        return problem_response(
            Problem(
                type=PROBLEM_TYPE_BASE + "internal",
                title="Internal Server Error",
                status=500,
                detail="internal server error (logged on the server)",
                instance=request.path,
            )
        )
