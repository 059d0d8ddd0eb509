"""``caractrl label|annotate TYPE NAME KEY=VALUE... KEY-...``, as kubectl has them.

Both send one JSON merge patch of ``metadata.labels`` (``annotations``). Without
``--overwrite`` a key that already holds another value is refused, checked against the
version read and sent with its resourceVersion as precondition, so a concurrent writer is
never overwritten silently (a 409 re-reads and checks again).
"""

from __future__ import annotations

from typing import Any

import click

from caravanserai.api import Conflict, ResourceKind
from caravanserai.client.http import CaravanseraiClient
from cli.context import get_state, global_options
from cli.kinds import KIND, complete_names, resources_of

__all__ = ["annotate", "label", "parse_changes"]

_RETRIES = 5


def parse_changes(args: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """``key=value`` → set, ``key-`` → remove; anything else is a usage error."""
    sets: dict[str, str] = {}
    removes: list[str] = []
    for arg in args:
        if "=" in arg:
            key, _, value = arg.partition("=")
            if not key:
                raise click.BadParameter(f"{arg!r}: the key is empty", param_hint="KEY=VALUE")
            sets[key] = value
        elif arg.endswith("-") and len(arg) > 1:
            removes.append(arg[:-1])
        else:
            raise click.BadParameter(
                f"{arg!r}: expected KEY=VALUE to set or KEY- to remove", param_hint="KEY=VALUE"
            )
    both = sorted(set(sets) & set(removes))
    if both:
        raise click.BadParameter(f"{', '.join(both)}: both set and removed")
    return sets, removes


def _run(
    field: str,
    verb: str,
    kind: ResourceKind,
    name: str,
    changes: tuple[str, ...],
    overwrite: bool,
    resource_version: str | None,
) -> None:
    sets, removes = parse_changes(changes)
    noun = kind.kind.lower()

    async def run(client: CaravanseraiClient) -> str:
        resources = resources_of(client, kind)
        for attempt in range(_RETRIES):
            obj = await resources.get(name)
            current: dict[str, str] = getattr(obj.metadata, field)
            if not overwrite:
                for key, value in sets.items():
                    if key in current and current[key] != value:
                        raise click.ClickException(
                            f"{key!r} already has a value ({current[key]}), "
                            "and --overwrite is false"
                        )
            patch: dict[str, Any] = {k: v for k, v in sets.items() if current.get(k) != v}
            patch.update({k: None for k in removes if k in current})
            if not patch:
                return f"{noun}/{name} not {verb}"
            try:
                await resources.patch(
                    name,
                    {"metadata": {field: patch}},
                    resource_version=resource_version or obj.metadata.resource_version,
                )
            except Conflict:
                if resource_version is not None or attempt == _RETRIES - 1:
                    raise
                continue
            return f"{noun}/{name} {verb}"
        raise AssertionError("unreachable")  # pragma: no cover

    click.echo(get_state().run(run))


_OPTIONS = [
    click.argument("kind", metavar="TYPE", type=KIND),
    click.argument("name", shell_complete=complete_names),
    click.argument("changes", nargs=-1, required=True, metavar="KEY=VALUE... KEY-..."),
    click.option("--overwrite", is_flag=True, help="Replace values that are already set."),
    click.option(
        "--resource-version",
        default=None,
        help="Only change the object if it is still at this resourceVersion.",
    ),
]


def _with_options(f: Any) -> Any:
    for option in reversed(_OPTIONS):
        f = option(f)
    return global_options(f)


@click.command("label", short_help="Set or remove labels of a project or node.")
@_with_options
def label(
    kind: ResourceKind,
    name: str,
    changes: tuple[str, ...],
    overwrite: bool,
    resource_version: str | None,
) -> None:
    """Set (KEY=VALUE) or remove (KEY-) labels of a project or node.

    \b
    Examples:
      caractrl label project web tier=frontend
      caractrl label node node-01 zone=eu --overwrite
      caractrl label project web tier-
    """
    _run("labels", "labeled", kind, name, changes, overwrite, resource_version)


@click.command("annotate", short_help="Set or remove annotations of a project or node.")
@_with_options
def annotate(
    kind: ResourceKind,
    name: str,
    changes: tuple[str, ...],
    overwrite: bool,
    resource_version: str | None,
) -> None:
    """Set (KEY=VALUE) or remove (KEY-) annotations of a project or node.

    \b
    Examples:
      caractrl annotate project web owner=alice
      caractrl annotate project web owner=bob --overwrite
      caractrl annotate project web owner-
    """
    _run("annotations", "annotated", kind, name, changes, overwrite, resource_version)
