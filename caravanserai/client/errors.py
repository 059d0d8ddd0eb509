"""Client-side errors: the server could not be reached, or did not answer in time.

Errors the server reports (404, 409, 410, 422, ...) are the typed errors of
:mod:`caravanserai.api.problems`, rebuilt from the problem document.
"""

from __future__ import annotations

from caravanserai.api.problems import CaravanseraiError


class ClientError(CaravanseraiError):
    """Base of errors raised by the client itself, not reported by the server."""

    status, title, slug = 503, "Service Unavailable", "client"


class ServerUnreachable(ClientError, ConnectionError):
    """The server at ``url`` refused the connection or could not be resolved/reached."""

    slug = "unreachable"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to the Caravanserai server at {url}: {reason}")
        self.url = url
        self.reason = reason


class RequestTimeout(ClientError, TimeoutError):
    """The server did not answer (or a watch stream stayed silent) within the timeout."""

    status, title, slug = 504, "Gateway Timeout", "timeout"

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} timed out after {seconds:g} s")
        self.seconds = seconds


class ProtocolError(ClientError):
    """The server answered with something that is not the API's format."""

    status, title, slug = 502, "Bad Gateway", "protocol"


__all__ = ["ClientError", "ProtocolError", "RequestTimeout", "ServerUnreachable"]
