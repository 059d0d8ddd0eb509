"""Global options and the per-invocation state every command reads.

Global options (``--server``, ``--output``, ``--token``, ``--timeout``, ``--debug``) are
declared on the root group AND on every subcommand through one decorator, so they work
before and after the subcommand (``caractrl -o json get projects x`` and
``caractrl get projects x -o json``). Their callbacks record the given values in the shared
:class:`State`; the subcommand is parsed after the group, so a value given after the
subcommand wins, as the last word on a command line does.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cli.output import OUTPUT_FORMATS, OutputFormat, is_template

if TYPE_CHECKING:
    # Imported where used: ``caractrl --help`` and ``version --client`` need neither aiohttp
    # nor pydantic, and importing them costs most of the start-up time.
    from caravanserai.client.http import CaravanseraiClient
    from cli.config import Settings

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# aiohttp wants a finite number; "no limit" (--timeout 0) becomes a year.
_NO_LIMIT = 365 * 24 * 3600.0

ClientFactory = Callable[["Settings"], AbstractAsyncContextManager["CaravanseraiClient"]]


def default_client_factory(settings: Settings) -> CaravanseraiClient:
    from caravanserai.client.http import CaravanseraiClient
    from caravanserai.tls import TLSConfigError, client_context
    from cli.config import ConfigError

    try:
        ssl_context = client_context(settings.certificate_authority)
    except TLSConfigError as exc:
        raise ConfigError(str(exc)) from None
    return CaravanseraiClient(
        settings.server,
        token=settings.token,
        timeout=settings.timeout or _NO_LIMIT,
        ssl_context=ssl_context,
    )


@dataclass
class State:
    """What one invocation knows: the global flags given, and how to reach the server.

    Tests pass their own ``environ`` and ``client_factory``; the program uses the real ones.
    """

    environ: Mapping[str, str] | None = None
    client_factory: ClientFactory = default_client_factory
    flags: dict[str, Any] = field(default_factory=dict)
    # The program owns the process's logging; tests running commands in-process do not.
    manage_logging: bool = True
    _settings: Settings | None = None
    _logging_done: bool = False

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    @property
    def output(self) -> OutputFormat:
        value = self.flags.get("output") or OutputFormat.TABLE
        return OutputFormat.TEMPLATE if is_template(str(value)) else OutputFormat(value)

    @property
    def template(self) -> str:
        """The ``-o jsonpath=...`` / ``-o custom-columns=...`` value ("" for the others)."""
        value = str(self.flags.get("output") or "")
        return value if is_template(value) else ""

    @property
    def output_given(self) -> bool:
        return self.flags.get("output") is not None

    @property
    def debug(self) -> bool:
        return bool(self.flags.get("debug")) or self.env.get("CARA_DEBUG", "") not in ("", "0")

    def settings(self) -> Settings:
        if self._settings is None:
            from cli.config import resolve_settings

            self._settings = resolve_settings(
                server=self.flags.get("server"),
                token=self.flags.get("token"),
                timeout=self.flags.get("timeout"),
                certificate_authority=self.flags.get("certificate_authority"),
                environ=self.env,
            )
        return self._settings

    def client(self) -> AbstractAsyncContextManager[CaravanseraiClient]:
        return self.client_factory(self.settings())

    def configure_logging(self) -> None:
        """Library logs (the reflector retrying, aiohttp) stay silent unless ``--debug``:
        the CLI's own output is the user's interface, and errors reach it as exceptions."""
        if self._logging_done or not self.manage_logging:
            return
        self._logging_done = True
        from caravanserai.logging import configure_logging

        configure_logging(debug=self.debug, app="caractrl")
        if not self.debug:
            logging.getLogger().setLevel(logging.CRITICAL)

    def run(self, fn: Callable[[CaravanseraiClient], Awaitable[T]]) -> T:
        """Run ``fn(client)`` on a fresh event loop with an open client."""
        self.configure_logging()

        import asyncio  # here: ``--help`` and ``version --client`` never need an event loop

        async def main() -> T:
            async with self.client() as client:
                return await fn(client)

        return asyncio.run(main())

    def run_until_interrupted(self, fn: Callable[[CaravanseraiClient], Awaitable[None]]) -> None:
        """Like ``run`` for commands that stream until Ctrl-C: that is a normal end (exit 0).

        ``asyncio.run`` cancels the task on SIGINT, so the client closes before we return.
        """
        honour_sigint()
        try:
            self.run(fn)
        except KeyboardInterrupt:
            # Close the "^C" the terminal echoed, so the shell prompt starts on a new line.
            if sys.stderr.isatty():
                click.echo(err=True)


def honour_sigint() -> None:
    """Make Ctrl-C / ``kill -INT`` stop a streaming command even when it was started with
    SIGINT ignored (a background job of a script, ``nohup``, some CI runners): Python then
    keeps the inherited "ignore", and a ``get -w`` or ``port-forward`` would run forever.
    kubectl (Go's ``signal.Notify``) re-enables SIGINT the same way."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def get_state(ctx: click.Context | None = None) -> State:
    ctx = ctx or click.get_current_context()
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State()
        ctx.find_root().obj = obj
    return obj


def _record(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is None or value is False or param.name is None:
        return
    get_state(ctx).flags[param.name] = value


class OutputType(click.Choice):
    """``-o``: one of the formats, or ``jsonpath=...`` / ``custom-columns=...``."""

    def __init__(self) -> None:
        super().__init__(OUTPUT_FORMATS)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and is_template(value):
            return value
        return super().convert(value, param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "FORMAT"


def global_options(f: F) -> F:
    """Attach the global options (as hidden-from-the-function, recording callbacks)."""
    options = [
        click.option(
            "-s", "--server", metavar="URL", expose_value=False, callback=_record,
            help="Caravanserai server URL [env CARA_SERVER; config file; "
            "default http://localhost:8080].",
        ),
        click.option(
            "-o", "--output", type=OutputType(), expose_value=False,
            callback=_record, help="Output format: " + "|".join(OUTPUT_FORMATS)
            + "|jsonpath=TEMPLATE|custom-columns=HEADER:PATH,... [default: table].",
        ),
        click.option(
            "--token", metavar="TOKEN", expose_value=False, callback=_record,
            help="Bearer token for the server [env CARA_TOKEN; config file].",
        ),
        click.option(
            "--certificate-authority", metavar="FILE", expose_value=False, callback=_record,
            help="CA file to verify an https server [env CARA_CERTIFICATE_AUTHORITY; "
            "config file].",
        ),
        click.option(
            "--timeout", metavar="DURATION", expose_value=False, callback=_record,
            help="Timeout of each server call, e.g. 30s, 2m; 0 for none "
            "[env CARA_TIMEOUT; default 30s].",
        ),
        click.option(
            "--debug", is_flag=True, default=False, expose_value=False, callback=_record,
            help="Show tracebacks and debug logs [env CARA_DEBUG].",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f
