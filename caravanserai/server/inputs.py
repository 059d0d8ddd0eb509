"""Request text PostgreSQL cannot store or we cannot decode, refused before any handler.

A NUL in a path segment (``/api/v1/projects/%00``), a query parameter (``fieldSelector``,
``continue``) or a header, or bytes that are not UTF-8 (aiohttp keeps them as lone
surrogates), would otherwise reach the store as a DataError or an encoder as a
UnicodeEncodeError: a 500 for bad input. They are a 400 naming the parameter. Bodies are
checked where they are decoded (``bodies.read_document``: 422 with the field path).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from caravanserai.api.problems import BadRequest
from caravanserai.api.validation import text_problem


def check_request_text(request: web.Request) -> None:
    """Raise BadRequest for the first undecodable or unstorable path, query or header text."""
    if (problem := text_problem(request.path)) is not None:
        raise BadRequest(f"the request path {problem}")
    for key, value in request.query.items():
        if (problem := text_problem(key) or text_problem(value)) is not None:
            raise BadRequest(f"query parameter {ascii(key)[1:-1]!r} {problem}")
    for key, value in request.headers.items():
        if (problem := text_problem(key) or text_problem(value)) is not None:
            raise BadRequest(f"header {ascii(key)[1:-1]!r} {problem}")


@web.middleware
async def request_text_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    check_request_text(request)
    return await handler(request)
