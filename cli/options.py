"""Options shared by several commands (other than the global ones)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import click

from cli.config import ConfigError, parse_timeout
from cli.errors import CommandError
from cli.formatting import human_duration


class DurationType(click.ParamType):
    """``30``, ``30s``, ``5m``, ``1h``; 0 means no limit (None)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, float):
            return value
        try:
            seconds = parse_timeout(value, f"--{param.name if param else 'duration'}")
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        return seconds or None


DURATION = DurationType()

WAIT_TIMEOUT = click.option(
    "--wait-timeout", type=DURATION, default=None, metavar="DURATION",
    help="With --wait: give up after this long (e.g. 2m) with exit code 1 [default: no limit].",
)


@asynccontextmanager
async def wait_deadline(seconds: float | None, what: str) -> AsyncIterator[None]:
    """Bound a wait; on expiry a one-line error saying what we were waiting for."""
    if seconds is None:
        yield
        return
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise CommandError(
            f"timed out after {human_duration(seconds)} waiting for {what}"
        ) from None


class SuggestingChoice(click.Choice):
    """``click.Choice`` whose error names the closest valid value (``did you mean ...?``)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            import difflib

            choices = [str(c) for c in self.choices]
            lowered = {c.lower(): c for c in choices}
            close = difflib.get_close_matches(str(value).lower(), list(lowered), n=1, cutoff=0.6)
            hint = f"; did you mean {lowered[close[0]]!r}?" if close else ""
            self.fail(f"{value!r} is not one of {', '.join(choices)}{hint}", param, ctx)


DRY_RUN_MODES = ("none", "server", "client")

DRY_RUN = click.option(
    "--dry-run", "dry_run", type=SuggestingChoice(DRY_RUN_MODES), default="none",
    is_flag=False, flag_value="client", show_default=True,
    help="server: the server checks everything (validation, admission) and changes nothing; "
    "client: only check locally and compare with what exists; none: do it.",
)


def dry_run_suffix(mode: str) -> str:
    """What kubectl appends to each result line."""
    return {"server": " (server dry run)", "client": " (dry run)"}.get(mode, "")
