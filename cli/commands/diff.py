"""``caractrl diff -f FILE``: what ``apply`` would change, as a unified diff (kubectl diff).

Each object of the manifests is sent to the server as a dry run (``?dryRun=All``: every
validation and admission rule runs, nothing is stored); the answer, the object as apply would
leave it, is compared with the live object. Exit status as kubectl's: 0 no difference,
1 differences, 2 (or more) an error.
"""

from __future__ import annotations

import difflib
import sys
from typing import Any

import click

from caravanserai.api import KINDS, NotFound
from caravanserai.client.http import CaravanseraiClient
from cli.commands.apply import apply_one
from cli.context import get_state, global_options
from cli.errors import ReportedError
from cli.kinds import resources_of
from cli.manifests import Manifest, read_documents, validate_documents
from cli.printers import dump_yaml, kind_noun, wire

# Fields the server manages on every write: a difference there says nothing about intent.
_VOLATILE_META = ("resourceVersion", "generation", "uid", "creationTimestamp")


class DiffFailed(ReportedError):
    """kubectl diff's convention: an error is an exit status above 1 (1 means "differs")."""

    exit_code = 2


def comparable(obj: Any | None) -> str:
    """The YAML compared: everything apply manages (metadata, spec), not status or the
    server-managed metadata."""
    if obj is None:
        return ""
    data = wire(obj)
    data.pop("status", None)
    meta = data.get("metadata") or {}
    for key in _VOLATILE_META:
        meta.pop(key, None)
    return dump_yaml(data)


def unified(name: str, live: str, merged: str) -> list[str]:
    return list(difflib.unified_diff(
        live.splitlines(keepends=True), merged.splitlines(keepends=True),
        fromfile=f"live/{name}", tofile=f"merged/{name}",
    ))


@click.command("diff", short_help="Show what apply would change (exit 1 if anything).")
@click.option("-f", "--filename", "filenames", multiple=True, required=True,
              metavar="FILE|DIR|-", help="Manifest file, directory, or - for stdin.")
@click.option("-R", "--recursive", is_flag=True, help="Read directories recursively.")
@global_options
def diff(filenames: tuple[str, ...], recursive: bool) -> None:
    """Show, as a unified diff, how apply -f would change the live objects.

    The server checks each object as apply would (a dry run: nothing is changed), so a diff
    shows the defaults the server fills in, and an object the server would refuse is an
    error. Compared: metadata (labels, annotations) and spec; not status.

    Exit status: 0 no differences, 1 differences, 2 an error.

    \b
    Examples:
      caractrl diff -f project.yaml
      caractrl diff -f manifests/ && echo "up to date"
    """
    state = get_state()
    try:
        manifests = validate_documents(
            read_documents(filenames, sys.stdin, recursive=recursive)
        )
        changed = state.run(lambda c: _diff_all(c, manifests))
    except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        root = click.get_current_context().find_root()
        raise DiffFailed(exc, prog=root.info_name or "caractrl", debug=state.debug) from exc
    if changed:
        raise click.exceptions.Exit(1)


async def _diff_all(client: CaravanseraiClient, manifests: list[Manifest]) -> bool:
    changed = False
    for manifest in manifests:
        resources = resources_of(client, KINDS[manifest.kind])
        try:
            live: Any | None = await resources.get(manifest.name)
        except NotFound:
            live = None
        merged = (await apply_one(client, manifest, "server")).result
        name = f"{kind_noun(manifest.kind)}/{manifest.name}"
        lines = unified(name, comparable(live), comparable(merged))
        if lines:
            changed = True
            click.echo("".join(lines), nl=False)
    return changed
