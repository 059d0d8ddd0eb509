"""structlog setup shared by every program (cara-server, cara-agent, caractrl).

One line per event on stderr: JSON when stderr is not a terminal (so log shippers and tests
can parse it), a coloured key=value console format when a person is watching. Records of
the standard library's ``logging`` (aiohttp, psycopg, asyncio) go through the same
renderer, so a program never mixes two formats.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog

_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(
    *,
    debug: bool = False,
    json: bool | None = None,
    stream: IO[str] | None = None,
    app: str | None = None,
) -> None:
    """Configure structlog and the standard library's logging for this process.

    ``json`` defaults to "stderr is not a TTY". ``app`` (e.g. ``cara-server``) is added to
    every line so mixed logs of several programs stay attributable. Safe to call again (tests
    and programs that re-read their configuration): handlers are replaced, not stacked.
    """
    stream = stream if stream is not None else sys.stderr
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    level = logging.DEBUG if debug else logging.INFO

    processors = list(_SHARED_PROCESSORS)
    if app:
        processors.insert(0, _add_app(app))
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
        final = [structlog.processors.dict_tracebacks, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=True)
        final = [renderer]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=processors,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_caravanserai", False):
            root.removeHandler(old)
    handler._caravanserai = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's own access log would duplicate our request log line (with less detail).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *processors,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _add_app(app: str) -> Any:
    def processor(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("app", app)
        return event

    return processor


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger (``log.info("event", key=value)``)."""
    return structlog.get_logger(name, **initial)
