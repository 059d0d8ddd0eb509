"""The web dashboard: static files under ``/ui/``, served from the package itself.

The dashboard is a handful of ES modules and one vendored library (``ui/vendor/``, see its
README) — no build step at install time, no CDN, no external fonts: the machines it runs on
may be offline. It talks to the same ``/api/v1`` as everyone else, with the user's token,
so it needs no authority of its own: the files are public, the data is not.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

UI_ROOT = Path(__file__).with_name("ui")
UI_PREFIX = "/ui"

# The page runs only its own scripts and talks only to its own origin; nothing may frame
# it (a framed dashboard with a token in session storage is a clickjacking target).
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".md": "text/plain; charset=utf-8",
}


def is_ui_path(path: str) -> bool:
    """Whether ``path`` is one of the dashboard's static files (public, like any web UI)."""
    return path in ("/", UI_PREFIX) or path.startswith(UI_PREFIX + "/")


def _file_response(path: Path) -> web.FileResponse:
    content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    headers = dict(_SECURITY_HEADERS)
    headers["Content-Type"] = content_type or "application/octet-stream"
    # Revalidate every time: after an upgrade the old modules must not linger in a cache
    # while the new index.html expects the new ones (304s keep this cheap).
    headers["Cache-Control"] = "no-cache"
    return web.FileResponse(path, headers=headers)


def _resolve(relative: str) -> Path | None:
    """The file under UI_ROOT that ``relative`` names, or None (also for any path that
    would leave UI_ROOT: ``..``, absolute paths, symlinks pointing out)."""
    root = UI_ROOT.resolve()
    try:
        candidate = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if candidate != root and root not in candidate.parents:
        return None
    return candidate if candidate.is_file() else None


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(UI_PREFIX + "/")


async def _index(request: web.Request) -> web.StreamResponse:
    return _file_response(UI_ROOT / "index.html")


async def _asset(request: web.Request) -> web.StreamResponse:
    path = _resolve(request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound(text="no such file in the dashboard\n")
    return _file_response(path)


def add_ui_routes(app: web.Application) -> None:
    """Register ``/`` and ``/ui`` (redirects), ``/ui/`` (the page) and ``/ui/{path}``.

    They are not part of the API's route table (and so not in the OpenAPI document):
    they serve files, not resources.
    """
    app.router.add_get("/", _redirect)
    app.router.add_get(UI_PREFIX, _redirect)
    app.router.add_get(UI_PREFIX + "/", _index)
    app.router.add_get(UI_PREFIX + "/{path:.+}", _asset)
