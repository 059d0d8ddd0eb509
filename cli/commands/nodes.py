"""``caractrl cordon|uncordon|drain NODE...``: take nodes out of (and back into) scheduling.

As kubectl: ``cordon`` marks a node unschedulable (``spec.unschedulable``), ``drain``
cordons it, sets its state to ``Draining`` and moves its projects elsewhere, ``uncordon``
undoes both. A drained project goes back to Pending (reason ``NodeDrained``): the scheduler
places it on another node and the drained node's agent removes its containers there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import click

from caravanserai.api import Conflict, NodeState, NotFound, ProjectPhase
from caravanserai.api.node import Node
from caravanserai.api.phases import DEPLOYED_PHASES
from caravanserai.client.http import CaravanseraiClient
from cli.context import get_state, global_options
from cli.errors import PartialFailure, echo_error, not_found
from cli.kinds import complete_names

# Phases whose containers live on the node; Terminating ones are torn down where they are.
_MOVABLE = DEPLOYED_PHASES
_RETRIES = 5


async def _write_node(
    client: CaravanseraiClient, name: str, change: Callable[[Node], Awaitable[bool]]
) -> bool:
    """Apply ``change`` to the current node with its resourceVersion, retrying on a race
    (heartbeats write the node all the time). Returns whether anything changed."""
    for attempt in range(_RETRIES):
        node = await client.nodes.get(name)
        try:
            return await change(node)
        except Conflict:
            if attempt == _RETRIES - 1:
                raise
    return False


async def _set_unschedulable(client: CaravanseraiClient, name: str, value: bool) -> bool:
    async def change(node: Node) -> bool:
        if node.spec.unschedulable == value:
            return False
        node.spec.unschedulable = value
        await client.nodes.update(node)
        return True

    return await _write_node(client, name, change)


async def _set_state(
    client: CaravanseraiClient, name: str, wanted: NodeState, only_from: NodeState | None
) -> bool:
    async def change(node: Node) -> bool:
        if node.status.state == wanted or (only_from and node.status.state != only_from):
            return False
        node.status.state = wanted
        await client.nodes.update_status(node)
        return True

    return await _write_node(client, name, change)


async def _move_projects(client: CaravanseraiClient, node: str) -> list[str]:
    moved = []
    projects = await client.projects.list_all()
    for project in projects.items:
        if project.status.node_ref != node or project.status.phase not in _MOVABLE:
            continue
        try:
            await client.projects.patch_status(
                project.metadata.name,
                ProjectPhase.PENDING,
                "NodeDrained",
                f'node "{node}" is being drained; project moved for rescheduling',
                resource_version=project.metadata.resource_version,
            )
        except (Conflict, NotFound):
            continue  # it moved or went away meanwhile: nothing to drain
        moved.append(project.metadata.name)
    return moved


def _for_each(
    names: tuple[str, ...], action: Callable[[CaravanseraiClient, str], Awaitable[str]]
) -> None:
    state = get_state()

    async def run(client: CaravanseraiClient) -> None:
        failed = False
        for name in names:
            try:
                click.echo(await action(client, name))
            except NotFound:
                echo_error(not_found("Node", name))
                failed = True
        if failed:
            raise PartialFailure()

    state.run(run)


@click.command("cordon", short_help="Mark nodes unschedulable.")
@click.argument("names", nargs=-1, required=True, shell_complete=complete_names)
@global_options
def cordon(names: tuple[str, ...]) -> None:
    """Mark nodes unschedulable: no new projects land there; running ones stay.

    \b
    Example:
      caractrl cordon node-01
    """

    async def action(client: CaravanseraiClient, name: str) -> str:
        changed = await _set_unschedulable(client, name, True)
        return f'node "{name}" ' + ("cordoned" if changed else "already cordoned")

    _for_each(names, action)


@click.command("uncordon", short_help="Mark nodes schedulable again.")
@click.argument("names", nargs=-1, required=True, shell_complete=complete_names)
@global_options
def uncordon(names: tuple[str, ...]) -> None:
    """Mark nodes schedulable again (and end a drain).

    \b
    Example:
      caractrl uncordon node-01
    """

    async def action(client: CaravanseraiClient, name: str) -> str:
        changed = await _set_unschedulable(client, name, False)
        # Ready again at once; node-health turns it NotReady if its agent is in fact silent.
        changed |= await _set_state(client, name, NodeState.READY, NodeState.DRAINING)
        return f'node "{name}" ' + ("uncordoned" if changed else "already uncordoned")

    _for_each(names, action)


@click.command("drain", short_help="Move every project off nodes.")
@click.argument("names", nargs=-1, required=True, shell_complete=complete_names)
@global_options
def drain(names: tuple[str, ...]) -> None:
    """Cordon nodes, set them Draining and move their projects to other nodes.

    Each project goes back to Pending and the scheduler places it on another Ready node
    (it waits if there is none); the drained node's agent then removes its containers.
    Ephemeral volumes do not move with a project. Undo with ``caractrl uncordon``.

    \b
    Example:
      caractrl drain node-01
    """

    async def action(client: CaravanseraiClient, name: str) -> str:
        await _set_unschedulable(client, name, True)
        await _set_state(client, name, NodeState.DRAINING, None)
        moved = await _move_projects(client, name)
        detail = f" ({len(moved)} project(s) moved: {', '.join(moved)})" if moved else ""
        return f'node "{name}" drained{detail}'

    _for_each(names, action)


__all__ = ["cordon", "drain", "uncordon"]
