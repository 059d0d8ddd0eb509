"""``caractrl wait project/NAME --for=phase=Running|condition=Ready|delete``."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from caravanserai.api import KINDS, NotFound, ResourceKind
from caravanserai.client.http import CaravanseraiClient
from cli.config import ConfigError, parse_timeout
from cli.context import State, get_state, global_options, honour_sigint
from cli.errors import CommandError, not_found
from cli.kinds import ALIASES, resources_of
from cli.manifests import describe_ref
from cli.options import wait_deadline
from cli.printers import kind_noun
from cli.waiting import (
    BadCondition,
    LiveStatus,
    WaitCondition,
    condition_met,
    parse_condition,
    progress_text,
)
from cli.watching import wait_for

# kubectl's default for `wait --timeout`.
DEFAULT_WAIT = 30.0


def _targets(args: tuple[str, ...]) -> list[tuple[ResourceKind, str]]:
    """``project/a node/b`` or ``projects a b``."""
    if not args:
        raise click.UsageError("name what to wait for, e.g. project/my-project")
    if "/" in args[0]:
        out = []
        for arg in args:
            kind, sep, name = arg.partition("/")
            if not sep or not name or kind.lower() not in ALIASES:
                raise click.UsageError(f"{arg!r}: want KIND/NAME, e.g. project/my-project")
            out.append((KINDS[ALIASES[kind.lower()]], name))
        return out
    kind_name = ALIASES.get(args[0].lower())
    if kind_name is None:
        raise click.UsageError(f"unknown resource type {args[0]!r} (use projects or nodes)")
    if len(args) < 2:
        raise click.UsageError(f"name the {args[0]} to wait for")
    return [(KINDS[kind_name], name) for name in args[1:]]


def _timeout(state: State) -> float | None:
    given = state.flags.get("timeout")
    if given is None:
        return DEFAULT_WAIT
    try:
        return parse_timeout(given, "--timeout") or None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.command("wait", short_help="Wait until objects reach a phase or condition, or are gone.")
@click.argument("targets", nargs=-1, metavar="KIND/NAME...")
@click.option("--for", "for_", required=True, metavar="CONDITION",
              help="delete, phase=PHASE (e.g. phase=Running) or condition=TYPE[=STATUS] "
              "(e.g. condition=Ready; for a project Ready means its containers run).")
@global_options
def wait(targets: tuple[str, ...], for_: str) -> None:
    """Wait until every named object meets a condition, as kubectl wait does.

    Prints "KIND/NAME condition met" per object (exit 0). --timeout (default 30s; 0 waits
    forever) bounds the whole wait: when it passes, exit 1. A terminal shows each object's
    progress (phase, node, services running) while waiting; a pipe gets one line per change
    on stderr.

    \b
    Examples:
      caractrl wait project/blog --for=phase=Running
      caractrl wait project/blog --for=condition=Ready --timeout=2m
      caractrl wait project/blog --for=delete
      caractrl wait node/node-01 --for=condition=Ready
    """
    state = get_state()
    try:
        cond = parse_condition(for_)
    except BadCondition as exc:
        raise click.UsageError(str(exc)) from None
    objects = _targets(targets)
    seconds = _timeout(state)
    honour_sigint()  # a long wait must answer Ctrl-C even when started with SIGINT ignored
    state.run(lambda c: _wait_all(c, objects, cond, seconds))


async def _wait_all(
    client: CaravanseraiClient,
    objects: list[tuple[ResourceKind, str]],
    cond: WaitCondition,
    seconds: float | None,
) -> None:
    refs = ", ".join(f"{kind_noun(k.kind)}/{n}" for k, n in objects)
    with LiveStatus() as live:
        async with (
            wait_deadline(seconds, f"{cond.describe()} of {refs}"),
            asyncio.TaskGroup() as tg,
        ):
            tasks = [tg.create_task(_wait_one(client, k, n, cond, live)) for k, n in objects]
    for task in tasks:
        click.echo(task.result())


async def _wait_one(
    client: CaravanseraiClient, kind: ResourceKind, name: str, cond: WaitCondition,
    live: LiveStatus,
) -> str:
    resources = resources_of(client, kind)
    key = f"{kind_noun(kind.kind)}/{name}"
    if cond.what != "delete":
        try:
            await resources.get(name)
        except NotFound:
            raise not_found(kind.kind, name) from None

    def on_change(obj: Any) -> None:
        live.update(key, progress_text(obj))

    def done(obj: Any) -> bool:
        if obj is None and cond.what != "delete":
            raise CommandError(f"{describe_ref(kind.kind, name)} was deleted while waiting")
        return condition_met(cond, obj)

    await wait_for(resources, name, done, on_change)
    return f"{key} deleted" if cond.what == "delete" else f"{key} condition met"
