"""``caractrl edit project|node NAME``: change an object in your editor, as kubectl edit.

The object (without status, which the system writes) opens in ``$CARA_EDITOR``,
``$EDITOR`` or ``vi``. Saving it sends the update with the resourceVersion it was opened
at, so a change made meanwhile by someone else is a conflict, never overwritten. An
invalid object (a YAML error, a field the server refuses with 422) reopens the editor with
the errors as comments at the top; saving it unchanged, or an empty file, cancels.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import click

from caravanserai.api import CaravanseraiError, Invalid, ResourceKind
from cli.context import State, get_state, global_options
from cli.errors import CommandError, explain, not_found
from cli.kinds import KIND, complete_names, resources_of
from cli.manifests import Document, ManifestError, describe_ref, parse_text, validate_documents
from cli.printers import dump_yaml, wire

HEADER = (
    "# Edit the object below and save; lines starting with '#' are ignored.\n"
    "# An empty file, or one saved unchanged, cancels the edit.\n"
)


def editor_command(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    return shlex.split(environ.get("CARA_EDITOR") or environ.get("EDITOR") or "vi")


def editable(obj: Any) -> str:
    data = wire(obj)
    data.pop("status", None)
    return dump_yaml(data)


def strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


@click.command("edit", short_help="Edit a project or node in your editor.")
@click.argument("resource", type=KIND)
@click.argument("name", shell_complete=complete_names)
@global_options
def edit(resource: ResourceKind, name: str) -> None:
    """Open an object in $CARA_EDITOR / $EDITOR (default vi) and apply what you save.

    \b
    Examples:
      caractrl edit project my-project
      EDITOR=nano caractrl edit node node-01
    """
    state = get_state()
    resources: Any = None

    async def fetch(client: Any) -> Any:
        nonlocal resources
        try:
            return await resources_of(client, resource).get(name)
        except CaravanseraiError as exc:
            if exc.status == 404:
                raise not_found(resource.kind, name) from None
            raise

    current = state.run(fetch)
    original = editable(current)
    text = original
    errors: list[str] = []
    previous: str | None = None
    with tempfile.TemporaryDirectory(prefix="caractrl-edit-") as tmp:
        path = Path(tmp) / f"{resource.kind.lower()}-{name}.yaml"
        while True:
            comments = "".join(f"# {line}\n" for line in errors)
            path.write_text(HEADER + comments + text, encoding="utf-8")
            _run_editor(path)
            edited = strip_comments(path.read_text(encoding="utf-8"))
            if not edited.strip() or edited.strip() == strip_comments(original).strip():
                click.echo("Edit cancelled, no changes made.")
                return
            if previous is not None and edited.strip() == previous.strip():
                raise CommandError(
                    f"{describe_ref(resource.kind, name)}: not changed; the errors stand", errors
                )
            previous = edited
            text = edited + "\n"
            try:
                _save(state, resource, name, edited)
            except (ManifestError, Invalid, CommandError) as exc:
                message, lines = explain(exc)
                errors = [f"error: {message}", *[f"  {line}" for line in lines]]
                continue
            click.echo(f"{describe_ref(resource.kind, name)} edited")
            return


def _run_editor(path: Path) -> None:
    command = [*editor_command(os.environ), str(path)]
    try:
        code = subprocess.call(command)
    except OSError as exc:
        raise CommandError(
            f"cannot start the editor {command[0]!r} ({exc.strerror or exc}); "
            "set CARA_EDITOR or EDITOR"
        ) from None
    if code != 0:
        raise CommandError(f"the editor {command[0]!r} exited with status {code}; nothing saved")


def _save(state: State, kind: ResourceKind, name: str, text: str) -> Any:
    from cli.commands.apply import _body

    docs = [Document("edited object", i + 1, d) for i, d in enumerate(parse_text("edit", text))]
    if len(docs) != 1:
        raise CommandError(f"the file must hold one object, not {len(docs)}")
    [manifest] = validate_documents(docs)
    if manifest.kind != kind.kind or manifest.name != name:
        raise CommandError(
            f"kind and name cannot change (still {kind.kind.lower()} {name!r})"
        )
    rv = manifest.resource.metadata.resource_version

    async def update(client: Any) -> Any:
        return await resources_of(client, kind).update(_body(manifest.resource, rv))

    return state.run(update)
