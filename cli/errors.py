"""Turning every failure into one readable ``Error: ...`` line on stderr, exit code 1.

Problem details from the server become their ``detail`` plus one indented line per field
error; a server that cannot be reached names the URL tried and how to set another. Nothing
here prints a traceback unless ``--debug`` asked for one.
"""

from __future__ import annotations

import os
import socket
import traceback
from typing import IO, Any

import aiohttp
import click

from caravanserai.api import CaravanseraiError, FieldError, NotFound
from caravanserai.client.errors import RequestTimeout, ServerUnreachable
from cli.config import ConfigError
from cli.manifests import ManifestError, describe_ref


class CommandError(Exception):
    """A failure a command explains itself: ``message`` plus optional detail lines."""

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.lines = lines or []


class PartialFailure(Exception):
    """Some items failed and their errors were already printed; only the exit code is left."""


def not_found(kind: str, name: str) -> CommandError:
    return CommandError(f"{describe_ref(kind, name)} not found")


def object_error(kind: str, name: str, exc: CaravanseraiError) -> CommandError:
    """A server refusal about one object, naming it once (the detail may name it already)."""
    ref = describe_ref(kind, name)
    # The server speaks HTTP; the user typed a command line.
    detail = (exc.detail or exc.title).replace("use ?force=true", "use --force")
    message = detail if f'"{name}"' in detail else f"{ref}: {detail}"
    return CommandError(message, [str(e) for e in exc.errors or []])


def server_hint(prog: str) -> str:
    return f"set --server, CARA_SERVER or '{prog} config set-server URL'"


def explain(exc: BaseException, prog: str = "caractrl") -> tuple[str, list[str]]:
    """The message and detail lines for an exception (without the ``Error: `` prefix)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # concurrent streams: the first failure tells the story
    if isinstance(exc, CommandError):
        return exc.message, exc.lines
    if isinstance(exc, ManifestError):
        return exc.summary, exc.lines
    if isinstance(exc, ServerUnreachable):
        reason = _unreachable_reason(exc)
        return (
            f"cannot connect to the Caravanserai server at {exc.url} ({reason}); "
            + server_hint(prog),
            [],
        )
    if isinstance(exc, RequestTimeout):
        return (
            f"{exc.detail}; the server is slow or unreachable (raise --timeout, "
            "or set it to 0 for no limit)",
            [],
        )
    if isinstance(exc, CaravanseraiError):
        detail = exc.detail or exc.title
        return detail, [str(e) for e in exc.errors or []]
    if isinstance(exc, ConfigError):
        return str(exc), []
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), []
    text = str(exc) or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {text} (run with --debug for a traceback)", []


def _unreachable_reason(exc: ServerUnreachable) -> str:
    """``connection refused`` rather than asyncio's ``Connect call failed ('127.0.0.1', 80)``."""
    cause: BaseException | None = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectorCertificateError):
            return exc.reason  # the client's words: which certificate check failed, and why
        err = getattr(cause, "os_error", None) or (cause if isinstance(cause, OSError) else None)
        if isinstance(err, socket.gaierror):
            return f"cannot resolve the host name: {err.strerror or err}".rstrip(".")
        if isinstance(err, OSError) and err.errno:
            return os.strerror(err.errno).lower()
        cause = cause.__cause__
    reason = (exc.reason or "unreachable").rstrip(".")
    return reason[:1].lower() + reason[1:]


def field_lines(errors: list[FieldError] | None, prefix: str = "") -> list[str]:
    return [f"{prefix}{e}" for e in errors or []]


class ReportedError(click.ClickException):
    """What click shows for our failures: ``Error: msg`` plus indented lines, exit 1."""

    exit_code = 1

    def __init__(self, cause: BaseException, *, prog: str, debug: bool) -> None:
        message, lines = explain(cause, prog)
        super().__init__(message)
        self.lines = lines
        self.cause = cause
        self.debug = debug

    def show(self, file: IO[Any] | None = None) -> None:
        if self.debug:
            click.echo(
                "".join(traceback.format_exception(self.cause)).rstrip(), err=True
            )
        if isinstance(self.cause, PartialFailure):
            return
        click.echo(f"Error: {self.message}", err=True, file=file)
        for line in self.lines:
            click.echo(f"  {line}", err=True, file=file)


def echo_error(exc: BaseException, prog: str = "caractrl") -> None:
    """Print one item's failure and go on (``delete a b c`` when ``b`` fails)."""
    message, lines = explain(exc, prog)
    click.echo(f"Error: {message}", err=True)
    for line in lines:
        click.echo(f"  {line}", err=True)


__all__ = [
    "CommandError",
    "NotFound",
    "PartialFailure",
    "ReportedError",
    "echo_error",
    "explain",
    "not_found",
]
