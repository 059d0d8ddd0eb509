"""Connection limits for the aiohttp servers of cara-server and cara-agent (API and proxy).

aiohttp bounds header sizes but not the number of connections, and an idle or slow-header
connection costs a file descriptor for as long as the client likes: at ~20,000 of them the
process runs out of descriptors, ``accept()`` fails in a loop, healthz times out for
everyone and asyncio logs every failure. Here, as nginx does:

* **header timeout**: a connection that has not sent one complete request head within
  ``header_timeout`` is closed (slowloris);
* **idle timeout**: a keep-alive connection with no request in progress is closed after
  ``idle_timeout`` (aiohttp's keep-alive timer; in-flight requests and open streams such
  as watches are not idle);
* **max connections**: past ``max_connections`` open connections a new one gets a
  ``503`` with ``Connection: close`` and is closed at once, so the process keeps descriptors
  for the clients it already serves;
* **accept errors** (EMFILE and the like) are logged at most once per interval, with the
  number suppressed, instead of one line per failed ``accept()``.

``LimitedAppRunner`` is a drop-in ``web.AppRunner``. WebSocket message sizes are bounded by
``WS_MAX_MESSAGE_BYTES`` on every hop (server relay, agent, caractrl).
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from caravanserai.logging import get_logger

log = get_logger("caravanserai.connections")

# aiohttp's own default for a WebSocket message; port-forward chunks are 32-64 KiB.
WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

_REFUSAL_BODY = (
    b'{"type":"about:blank","title":"Service Unavailable","status":503,'
    b'"detail":"too many open connections"}'
)
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/problem+json\r\n"
    b"Connection: close\r\n"
    b"Retry-After: 1\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 4096


class RateLimitedLog:
    """One log line per ``interval`` seconds per event, counting what it held back."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, event: str, now: float, **fields: Any) -> bool:
        """Log ``event`` unless it was logged less than ``interval`` ago; True if logged."""
        last = self._last.get(event)
        if last is not None and now - last < self.interval:
            self._suppressed[event] = self._suppressed.get(event, 0) + 1
            return False
        self._last[event] = now
        suppressed = self._suppressed.pop(event, 0)
        log.warning(event, suppressed=suppressed, **fields)
        return True


class _Refuse(asyncio.Protocol):
    """A connection past the limit: answer 503 and close (no request is read)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(_REFUSAL)
        transport.close()


class _LimitedServer:
    """Wraps aiohttp's protocol factory (``web.Server``): counts, refuses and times out."""

    def __init__(self, inner: web.Server, limits: ConnectionLimits, what: str) -> None:
        self._inner = inner
        self._limits = limits
        self._what = what
        self._log = RateLimitedLog()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self) -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        if len(self._inner.connections) >= self._limits.max_connections:
            self._log("connections.refused", loop.time(), server=self._what,
                      limit=self._limits.max_connections)
            return _Refuse()
        handler = self._inner()
        loop.call_later(self._limits.header_timeout, self._header_deadline, handler)
        return handler

    def _header_deadline(self, handler: RequestHandler) -> None:
        # Not one complete request head yet: a slow-header (or silent) client.
        if handler.transport is not None and getattr(handler, "_request_count", 1) == 0:
            self._log("connections.header_timeout", asyncio.get_running_loop().time(),
                      server=self._what, seconds=self._limits.header_timeout)
            handler.force_close()
            handler.transport.close()


class LimitedAppRunner(web.AppRunner):
    """``web.AppRunner`` with ``ConnectionLimits`` (see the module docstring)."""

    def __init__(
        self, app: web.Application, *, limits: ConnectionLimits, what: str = "http",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("keepalive_timeout", limits.idle_timeout)
        super().__init__(app, **kwargs)
        self._limits = limits
        self._what = what

    async def _make_server(self) -> web.Server:
        inner = await super()._make_server()
        return cast(web.Server, _LimitedServer(inner, self._limits, self._what))


_ACCEPT_LOG = RateLimitedLog()


def install_accept_error_limiter(loop: asyncio.AbstractEventLoop) -> None:
    """Route asyncio's ``accept()`` failures (EMFILE: "out of system resource") through a
    rate-limited log; everything else goes to the handler that was there before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "accept" in message:
            exc = context.get("exception")
            _ACCEPT_LOG("connections.accept_failed", loop.time(), error=str(exc or message))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def raise_file_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit), as Go
    does at start-up: the default 1024 is below any sensible ``max_connections``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            return soft
    return soft
