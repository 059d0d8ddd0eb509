"""``caractrl delete project|node NAME...`` and ``delete -f FILE``."""

from __future__ import annotations

import sys
from typing import Any

import click

from caravanserai.api import KINDS, CaravanseraiError, NotFound, ResourceKind
from caravanserai.client.errors import ClientError
from caravanserai.client.http import CaravanseraiClient
from cli.context import State, get_state, global_options
from cli.errors import PartialFailure, echo_error, not_found, object_error
from cli.kinds import KIND, complete_names, resources_of
from cli.manifests import ManifestError, describe_ref, read_documents
from cli.options import DRY_RUN, WAIT_TIMEOUT, dry_run_suffix, wait_deadline
from cli.printers import OutputFormat
from cli.progress import Progress
from cli.watching import wait_for


def _targets_from_files(
    filenames: tuple[str, ...], recursive: bool
) -> list[tuple[ResourceKind, str]]:
    """Kind and name of every document; the rest of a manifest does not matter to delete."""
    targets: list[tuple[ResourceKind, str]] = []
    problems: list[str] = []
    for doc in read_documents(filenames, sys.stdin, recursive=recursive):
        data = doc.data if isinstance(doc.data, dict) else {}
        kind = data.get("kind")
        meta = data.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        if kind not in KINDS:
            problems.append(
                f"{doc.where}: kind: unsupported kind {kind!r} (expected Project or Node)"
            )
        elif not isinstance(name, str) or not name:
            problems.append(f"{doc.where}: metadata.name: required")
        else:
            targets.append((KINDS[kind], name))
    if problems:
        raise ManifestError("cannot tell what to delete; nothing was deleted", problems)
    return targets


@click.command("delete", short_help="Delete projects or nodes.")
@click.argument("resource", type=KIND, required=False)
@click.argument("names", nargs=-1, shell_complete=complete_names)
@click.option("-f", "--filename", "filenames", multiple=True, metavar="FILE|DIR|-",
              help="Delete the objects these manifests describe (repeatable).")
@click.option("-R", "--recursive", is_flag=True, help="Read directories recursively.")
@click.option("--force", is_flag=True,
              help="Remove at once, without waiting for the node to tear the project down "
              "(its containers may be left behind until the agent sweeps them); for a node, "
              "even while projects are assigned to it.")
@click.option("--wait", is_flag=True, help="Block until the objects are gone.")
@WAIT_TIMEOUT
@DRY_RUN
@global_options
def delete(
    resource: ResourceKind | None,
    names: tuple[str, ...],
    filenames: tuple[str, ...],
    recursive: bool,
    force: bool,
    wait: bool,
    wait_timeout: float | None,
    dry_run: str,
) -> None:
    """Delete projects or nodes.

    A project without a node is removed at once ("deleted"); one running on a node moves to
    Terminating while its agent tears it down ("is being deleted") and disappears after.

    \b
    Examples:
      caractrl delete project my-project
      caractrl delete project a b c --wait
      caractrl delete -f project.yaml
      caractrl delete node node-01 --force
      caractrl delete project my-project --dry-run=server
    """
    state = get_state()
    if filenames:
        if resource is not None or names:
            raise click.UsageError("give either -f FILE or RESOURCE NAME..., not both")
        targets = _targets_from_files(filenames, recursive)
    else:
        if resource is None or not names:
            raise click.UsageError(
                "say what to delete: RESOURCE NAME... (e.g. project my-project) or -f FILE"
            )
        targets = [(resource, n) for n in names]
    if wait and dry_run != "none":
        raise click.UsageError("--wait and --dry-run exclude each other: nothing is deleted")
    state.run(lambda c: _delete_all(c, state, targets, force, wait, wait_timeout, dry_run))


def _say(state: State, kind: ResourceKind, name: str, what: str, dry_run: str = "none") -> None:
    if state.output is OutputFormat.NAME:
        click.echo(f"{kind.kind.lower()}/{name}")
    else:
        click.echo(f"{describe_ref(kind.kind, name)} {what}{dry_run_suffix(dry_run)}")


async def _delete_all(
    client: CaravanseraiClient,
    state: State,
    targets: list[tuple[ResourceKind, str]],
    force: bool,
    wait: bool,
    wait_timeout: float | None,
    dry_run: str = "none",
) -> None:
    failed = False
    pending: list[tuple[ResourceKind, str]] = []
    for kind, name in targets:
        resources = resources_of(client, kind)
        try:
            if dry_run == "client":
                # Only that it exists; what the server would refuse is --dry-run=server's.
                await resources.get(name)
                remaining: Any = None
            else:
                dry: dict[str, bool] = {"dry_run": True} if dry_run == "server" else {}
                remaining = await resources.delete(name, force=force, **dry)
        except NotFound:
            echo_error(not_found(kind.kind, name))
            failed = True
            continue
        except ClientError:
            raise
        except CaravanseraiError as exc:
            echo_error(object_error(kind.kind, name, exc))
            failed = True
            continue
        if remaining is None:
            _say(state, kind, name, "deleted", dry_run)
        else:
            _say(state, kind, name, "is being deleted", dry_run)
            pending.append((kind, name))
    if wait:
        for kind, name in pending:
            async with Progress() as progress, wait_deadline(
                wait_timeout, f"{describe_ref(kind.kind, name)} to be deleted"
            ):
                await _wait_gone(client, kind, name, progress)
            if state.output is not OutputFormat.NAME:
                _say(state, kind, name, "deleted")
    if failed:
        raise PartialFailure()


async def _wait_gone(
    client: CaravanseraiClient, kind: ResourceKind, name: str, progress: Progress
) -> None:
    ref = describe_ref(kind.kind, name)

    def on_change(obj: Any | None) -> None:
        status = getattr(obj, "status", None)
        phase = getattr(status, "phase", None) or getattr(status, "state", None)
        progress.update(f"waiting for {ref} to be deleted" + (f": {phase}" if phase else ""))

    await wait_for(resources_of(client, kind), name, lambda obj: obj is None, on_change)


__all__ = ["delete", "not_found"]
