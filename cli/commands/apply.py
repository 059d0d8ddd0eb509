"""``caractrl apply -f FILE|DIR|-``: create or update Projects and Nodes from manifests."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import click

from caravanserai.api import (
    KINDS,
    AlreadyExists,
    CaravanseraiError,
    Conflict,
    NotFound,
    Project,
    ProjectPhase,
    ResourceKind,
)
from caravanserai.api.project import CONDITION_PHASE
from caravanserai.client.errors import ClientError
from caravanserai.client.http import CaravanseraiClient
from cli.compose import expand_compose
from cli.context import State, get_state, global_options, honour_sigint
from cli.errors import CommandError, PartialFailure, echo_error, object_error
from cli.kinds import resources_of
from cli.manifests import Manifest, describe_ref, read_documents, validate_documents
from cli.options import DRY_RUN, WAIT_TIMEOUT, dry_run_suffix, wait_deadline
from cli.printers import OutputFormat, dump_json, dump_yaml, object_name, wire
from cli.tables import conditions_summary
from cli.waiting import LiveStatus, progress_text
from cli.watching import wait_for

# An update races with controllers and agents writing the same object: re-read and retry.
CONFLICT_RETRIES = 5
SETTLED = (ProjectPhase.RUNNING, ProjectPhase.FAILED)


@dataclass
class Applied:
    manifest: Manifest
    action: str  # created | configured | unchanged
    result: Any


def _same_intent(desired: Any, current: Any) -> bool:
    """Equal in what apply manages: spec, labels, annotations (defaults filled in)."""
    return (
        desired.spec == current.spec
        and desired.metadata.labels == current.metadata.labels
        and desired.metadata.annotations == current.metadata.annotations
    )


def _body(resource: Any, resource_version: str | None = None) -> dict[str, Any]:
    """What we send: the manifest's intent. Status and server-managed metadata are the
    server's business; a manifest copied from ``get -o yaml`` must not fight over them."""
    body = wire(resource)
    body.pop("status", None)
    meta = body["metadata"]
    for key in ("uid", "generation", "creationTimestamp", "deletionTimestamp", "resourceVersion"):
        meta.pop(key, None)
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    return body


async def apply_one(
    client: CaravanseraiClient, manifest: Manifest, dry_run: str = "none"
) -> Applied:
    """Create or update one object. ``dry_run``: ``server`` sends every write with
    ``dryRun`` (the server checks everything, changes nothing); ``client`` only reads and
    compares; the result is what the object would be."""
    resources = resources_of(client, _kind(manifest))
    desired = manifest.resource
    if dry_run == "client":
        return await _client_dry_run(resources, manifest)
    # Only a dry run passes the keyword: any client (or test double) without it still works.
    dry: dict[str, bool] = {"dry_run": True} if dry_run == "server" else {}
    try:
        created = await resources.create(_body(desired), **dry)
        return Applied(manifest, "created", created)
    except AlreadyExists:
        pass
    for attempt in range(CONFLICT_RETRIES):
        try:
            current = await resources.get(manifest.name)
        except NotFound:
            # Deleted between our create and get: create again.
            try:
                return Applied(
                manifest, "created", await resources.create(_body(desired), **dry)
            )
            except AlreadyExists:
                continue
        if _same_intent(desired, current):
            return Applied(manifest, "unchanged", current)
        sent_rv = current.metadata.resource_version
        try:
            updated = await resources.update(_body(desired, sent_rv), **dry)
            return Applied(manifest, "configured", updated)
        except Conflict:
            if attempt == CONFLICT_RETRIES - 1:
                raise
            # A stale resourceVersion (someone wrote in between) is worth another try; a
            # refusal of the object as it is (e.g. Terminating) is not: tell them apart.
            try:
                again = await resources.get(manifest.name)
            except NotFound:
                continue
            if again.metadata.resource_version == sent_rv:
                raise
    raise CommandError(f"{describe_ref(manifest.kind, manifest.name)}: kept changing, gave up")


async def _client_dry_run(resources: Any, manifest: Manifest) -> Applied:
    """What apply would do, judged here: the manifest is already valid; compare it with
    what exists (nothing is sent but reads)."""
    desired = manifest.resource
    try:
        current = await resources.get(manifest.name)
    except NotFound:
        return Applied(manifest, "created", desired)
    if _same_intent(desired, current):
        return Applied(manifest, "unchanged", current)
    merged = current.model_copy(deep=True)
    merged.spec = desired.spec
    merged.metadata.labels = dict(desired.metadata.labels)
    merged.metadata.annotations = dict(desired.metadata.annotations)
    return Applied(manifest, "configured", merged)


def _kind(manifest: Manifest) -> ResourceKind:
    return KINDS[manifest.kind]


def _report(state: State, applied: Applied, index: int, dry_run: str = "none") -> None:
    fmt = state.output
    if fmt is OutputFormat.NAME:
        click.echo(object_name(wire(applied.result)))
    elif fmt is OutputFormat.JSON:
        click.echo(dump_json(wire(applied.result)))
    elif fmt is OutputFormat.YAML:
        if index:
            click.echo("---")
        click.echo(dump_yaml(wire(applied.result)).rstrip("\n"))
    else:
        click.echo(
            f"{describe_ref(applied.manifest.kind, applied.manifest.name)} {applied.action}"
            f"{dry_run_suffix(dry_run)}"
        )


async def _wait_running(client: CaravanseraiClient, name: str, live: LiveStatus) -> Project:
    ref = describe_ref("Project", name)

    def on_change(obj: Project | None) -> None:
        live.update(f"project/{name}", progress_text(obj))

    def done(obj: Project | None) -> bool:
        return obj is None or obj.status.phase in SETTLED

    final: Project | None = await wait_for(client.projects, name, done, on_change)
    if final is None:
        raise CommandError(f"{ref} was deleted while waiting for it to run")
    return final


@click.command("apply", short_help="Create or update projects and nodes from manifests.")
@click.option("-f", "--filename", "filenames", multiple=True, required=True,
              metavar="FILE|DIR|-",
              help="Manifest file, directory of manifests, or - for stdin (repeatable).")
@click.option("-R", "--recursive", is_flag=True, help="Read directories recursively.")
@click.option("-p", "--project-name", default=None,
              help="Project name for a Compose file (default: its name:, else its directory).")
@click.option("--wait", is_flag=True,
              help="Wait until every applied project is Running (or Failed: exit 1).")
@WAIT_TIMEOUT
@DRY_RUN
@global_options
def apply(
    filenames: tuple[str, ...], recursive: bool, project_name: str | None, wait: bool,
    wait_timeout: float | None, dry_run: str,
) -> None:
    """Create or update projects and nodes from YAML or JSON manifests.

    Every document is validated first; if any is invalid, every error is printed and
    nothing is changed. Existing objects are updated (with their resourceVersion, so a
    concurrent change is never overwritten blindly); identical ones are left unchanged.
    A Compose file (top-level services, no apiVersion) is converted to a Project first
    (see caractrl convert); unsupported keys are reported per service.

    \b
    Examples:
      caractrl apply -f project.yaml
      caractrl apply -f manifests/ -f node.yaml
      cat project.yaml | caractrl apply -f -
      caractrl apply -f project.yaml --wait
      caractrl apply -f compose.yaml -p shop
      caractrl apply -f project.yaml --dry-run=server -o yaml
    """
    state = get_state()
    documents, warnings = expand_compose(
        read_documents(filenames, sys.stdin, recursive=recursive), project_name, os.environ
    )
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    manifests = validate_documents(documents)
    if wait and dry_run != "none":
        raise click.UsageError("--wait and --dry-run exclude each other: nothing would run")
    if wait:
        honour_sigint()  # as `caractrl wait`: Ctrl-C ends the wait even if SIGINT was ignored
    state.run(lambda c: _apply_all(c, state, manifests, wait, wait_timeout, dry_run))


async def _apply_all(
    client: CaravanseraiClient,
    state: State,
    manifests: list[Manifest],
    wait: bool,
    wait_timeout: float | None,
    dry_run: str = "none",
) -> None:
    failed = False
    applied: list[Applied] = []
    for manifest in manifests:
        try:
            result = await apply_one(client, manifest, dry_run)
        except ClientError:
            raise  # the server is unreachable: nothing else will work either
        except CaravanseraiError as exc:
            # One object refused (e.g. a project being deleted) should not hide the outcome
            # of the others; the exit code still says something went wrong.
            echo_error(object_error(manifest.kind, manifest.name, exc))
            failed = True
            continue
        _report(state, result, len(applied), dry_run)
        applied.append(result)
    projects = [a.manifest.name for a in applied if a.manifest.kind == "Project"]
    if wait and projects:
        refs = ", ".join(describe_ref("Project", n) for n in projects)
        # All at once, one live line each (phase, node, services running), as Compose
        # shows a stack coming up; the results follow in the order of the manifests.
        with LiveStatus() as live:
            async with wait_deadline(wait_timeout, f"{refs} to run"), asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(_wait_running(client, n, live)) for n in projects]
        for name, task in zip(projects, tasks, strict=True):
            final = task.result()
            ref = describe_ref("Project", name)
            if final.status.phase is ProjectPhase.FAILED:
                echo_error(CommandError(f"{ref} failed: {_why(final)}"))
                failed = True
            elif state.output is OutputFormat.TABLE:
                click.echo(f"{ref} is Running on {final.status.node_ref or '<none>'}")
    if failed:
        raise PartialFailure()


def _why(project: Project) -> str:
    """``Reason: message`` of the condition that explains the failure: a False condition
    (the agent's ``ContainersRunning``), else the Phase changelog condition."""
    conditions = project.status.conditions
    chosen = next((c for c in conditions if c.status.value == "False" and c.reason), None)
    chosen = chosen or next((c for c in conditions if c.type == CONDITION_PHASE), None)
    if chosen is None:
        return conditions_summary(conditions)
    return ": ".join(x for x in (chosen.reason, chosen.message) if x) or chosen.type
