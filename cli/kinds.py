"""Resource type arguments (``projects``, ``project``, ``proj``, ``nodes``, ``node``, ``no``),
their client routes, and shell completion of names."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from click.shell_completion import CompletionItem

from caravanserai.api import KINDS, ResourceKind
from caravanserai.api.event import EVENTS, RecordKind
from caravanserai.client.http import CaravanseraiClient, ResourceClient

ALIASES: dict[str, str] = {
    "project": "Project",
    "projects": "Project",
    "proj": "Project",
    "node": "Node",
    "nodes": "Node",
    "no": "Node",
}
# What completion offers: the forms people type (the seeds use both).
_SUGGESTED = ("projects", "project", "nodes", "node")


class KindType(click.ParamType):
    """Accepts a resource type in any usual spelling; converts to the ``ResourceKind``."""

    name = "resource"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> ResourceKind:
        if isinstance(value, ResourceKind):
            return value
        kind = ALIASES.get(str(value).lower())
        if kind is None:
            # Not BadParameter: its "Invalid value for 'projects|nodes'" prefix says nothing.
            raise click.UsageError(
                f"unknown resource type {value!r} (use projects or nodes)", ctx
            )
        return KINDS[kind]

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return [CompletionItem(s) for s in _SUGGESTED if s.startswith(incomplete)]

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "projects|nodes"


KIND = KindType()

EVENT_ALIASES = frozenset({"events", "event", "ev"})


class GetKindType(KindType):
    """``get``'s resource argument: projects, nodes, or events (read-only, listed and
    watched but never applied, described or deleted by users)."""

    def convert(  # type: ignore[override]
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> ResourceKind | RecordKind:
        if isinstance(value, RecordKind) or str(value).lower() in EVENT_ALIASES:
            return EVENTS
        try:
            return super().convert(value, param, ctx)
        except click.UsageError:
            raise click.UsageError(
                f"unknown resource type {value!r} (use projects, nodes or events)", ctx
            ) from None

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return [CompletionItem(s) for s in (*_SUGGESTED, "events") if s.startswith(incomplete)]

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "projects|nodes|events"


GET_KIND = GetKindType()


def resources_of(client: CaravanseraiClient, kind: ResourceKind) -> ResourceClient[Any]:
    return client.projects if kind.kind == "Project" else client.nodes


def complete_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Names of existing objects, asked from the server with a short timeout.

    Completion must never hang a shell or print an error into it: any failure offers nothing.
    """
    from cli.context import get_state  # here: context imports this module's users

    kind = ctx.params.get("resource")
    if not isinstance(kind, ResourceKind):
        return []
    state = get_state(ctx)
    already = set(ctx.params.get("names") or ())

    async def names(client: CaravanseraiClient) -> list[str]:
        result = await asyncio.wait_for(resources_of(client, kind).list(), timeout=3)
        return [o.metadata.name for o in result.items]

    try:
        found = state.run(names)
    except Exception:
        return []
    return [CompletionItem(n) for n in found if n.startswith(incomplete) and n not in already]
