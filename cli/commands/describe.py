"""``caractrl describe project|node NAME...``: a readable report per object."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from caravanserai.api import BadRequest, NotFound, ResourceKind
from caravanserai.api.event import Event
from caravanserai.api.problems import Forbidden
from caravanserai.client.http import CaravanseraiClient, ListOptions
from cli.context import get_state, global_options
from cli.describe import describe_node, describe_project
from cli.errors import PartialFailure, echo_error, not_found
from cli.events import describe_events
from cli.kinds import KIND, complete_names, resources_of


@click.command("describe", short_help="Show details of a project or node.")
@click.argument("resource", type=KIND)
@click.argument("names", nargs=-1, required=True, shell_complete=complete_names)
@global_options
def describe(resource: ResourceKind, names: tuple[str, ...]) -> None:
    """Show the details of projects or nodes: spec, status, conditions, recent phases, and
    the events about them (newest last).

    \b
    Examples:
      caractrl describe project my-project
      caractrl describe node node-01
    """
    state = get_state()
    state.run(lambda c: _describe(c, resource, names))


async def _describe(client: CaravanseraiClient, kind: ResourceKind, names: tuple[str, ...]) -> None:
    resources = resources_of(client, kind)
    missing = 0
    printed = 0
    for name in names:
        try:
            obj: Any = await resources.get(name)
        except NotFound:
            if len(names) == 1:
                raise not_found(kind.kind, name) from None
            echo_error(not_found(kind.kind, name))
            missing += 1
            continue
        if kind.kind == "Project":
            text = describe_project(obj, ingress_domain=await _ingress_domain(client, obj))
        else:
            projects = (await client.projects.list_all(ListOptions.of(node_ref=name))).items
            text = describe_node(
                obj, projects=projects, last_heartbeat=await _last_heartbeat(client, name)
            )
        text += "\n" + "\n".join(describe_events(await _events(client, kind.kind, name)))
        if printed:
            click.echo()  # a blank line between reports, as kubectl
        click.echo(text)
        printed += 1
    if missing:
        raise PartialFailure()


async def _last_heartbeat(client: CaravanseraiClient, name: str) -> datetime | None:
    """The node lease's heartbeat; None from a server without the route (or a node gone
    since), and describe shows the status's."""
    try:
        return await client.nodes.last_heartbeat(name)
    except (NotFound, Forbidden, BadRequest):
        return None


async def _events(client: CaravanseraiClient, kind: str, name: str) -> list[Event]:
    """The events about the object (its ``Events:`` section); none when the server has no
    events route or will not show them, so describe still works against it."""
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    try:
        return (await client.events.list_all(ListOptions.of(field_selector=selector))).items
    except (NotFound, Forbidden, BadRequest):
        return []


async def _ingress_domain(client: CaravanseraiClient, project: Any) -> str | None:
    """The domain the project's node completes short ingress hosts with, if it says."""
    node_name = project.status.node_ref
    if not node_name or not project.spec.ingress:
        return None
    try:
        node = await client.nodes.get(node_name)
    except NotFound:
        return None
    domain: str | None = node.status.network.ingress_domain
    return domain
