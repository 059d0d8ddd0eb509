"""``caractrl port-forward PROJECT[/SERVICE] [LOCAL:]REMOTE...``: local TCP to a container.

Listens on 127.0.0.1:LOCAL (kubectl's default address); each accepted connection gets its
own WebSocket to the server's ``/portforward`` route, which relays to the node's agent;
bytes travel as binary messages both ways until either side closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiohttp
import click

from caravanserai.api import NotFound, Project
from caravanserai.client.http import CaravanseraiClient
from cli.commands.logs import split_target
from cli.context import get_state, global_options
from cli.errors import CommandError, explain, not_found
from cli.streams import open_tunnel

_READ = 64 * 1024


@dataclass(frozen=True)
class PortSpec:
    local: int  # 0: let the system pick (":REMOTE")
    remote: int


def parse_port(text: str) -> PortSpec:
    """``8080:80``, ``80`` (same port locally) or ``:80`` (any free local port)."""
    local_text, sep, remote_text = text.rpartition(":")
    if not sep:
        local_text = remote_text
    try:
        remote = int(remote_text)
        local = int(local_text) if local_text else 0
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected [LOCAL:]REMOTE, e.g. 8080:80") from None
    if not 1 <= remote <= 65535 or not 0 <= local <= 65535:
        raise click.BadParameter(f"{text!r}: ports must be in 1-65535")
    return PortSpec(local, remote)


@click.command("port-forward", short_help="Forward local ports to a service.")
@click.argument("target", metavar="PROJECT[/SERVICE]")
@click.argument("ports", nargs=-1, required=True, metavar="[LOCAL:]REMOTE...")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Local address to listen on.")
@global_options
def port_forward(target: str, ports: tuple[str, ...], address: str) -> None:
    """Forward local ports to a service's container port, through the server.

    \b
    Examples:
      caractrl port-forward wordpress/app 8080:80
      caractrl port-forward my-project 8080        # the only service, port 8080 both sides
      caractrl port-forward wordpress/db :3306     # any free local port
    """
    state = get_state()
    project, service = split_target(target)
    specs = [parse_port(p) for p in ports]
    state.run_until_interrupted(lambda c: _forward(c, project, service, specs, address))


async def _check_target(client: CaravanseraiClient, project: str, service: str | None) -> None:
    """Fail before listening, with a clear line, when nothing could be forwarded."""
    try:
        obj: Project = await client.projects.get(project)
    except NotFound:
        raise not_found("Project", project) from None
    names = [s.name for s in obj.spec.services]
    if service is None and len(names) != 1:
        raise CommandError(
            f'project "{project}" has several services; name one: '
            + ", ".join(f"{project}/{n}" for n in names)
        )
    if service is not None and service not in names:
        raise CommandError(
            f'project "{project}" has no service "{service}" (services: {", ".join(names)})'
        )
    if not obj.status.node_ref:
        phase = obj.status.phase.value if obj.status.phase else "unknown"
        raise CommandError(f'project "{project}" is not running on a node (phase {phase})')


async def _pump_up(reader: asyncio.StreamReader, ws: aiohttp.ClientWebSocketResponse) -> None:
    while data := await reader.read(_READ):
        await ws.send_bytes(data)
    # Local side closed its end: closing the WebSocket ends the remote connection too.
    await ws.close()


async def _pump_down(ws: aiohttp.ClientWebSocketResponse, writer: asyncio.StreamWriter) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            writer.write(msg.data)
            await writer.drain()
        elif msg.type == aiohttp.WSMsgType.TEXT:
            writer.write(msg.data.encode())
            await writer.drain()
        else:
            break


async def _handle(
    client: CaravanseraiClient,
    project: str,
    service: str | None,
    spec: PortSpec,
    local_port: int,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    click.echo(f"Handling connection for {local_port}")
    try:
        async with open_tunnel(client, project, service, spec.remote) as ws:
            tasks = [
                asyncio.create_task(_pump_up(reader, ws)),
                asyncio.create_task(_pump_down(ws, writer)),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    except Exception as exc:  # one failed connection must not end the forwarding
        message, _ = explain(exc)
        click.echo(f"Error: forwarding connection for {local_port}: {message}", err=True)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _forward(
    client: CaravanseraiClient,
    project: str,
    service: str | None,
    specs: list[PortSpec],
    address: str,
) -> None:
    await _check_target(client, project, service)
    servers: list[asyncio.Server] = []
    connections: set[asyncio.Task[None]] = set()
    try:
        for spec in specs:
            def on_connect(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                spec: PortSpec = spec,
            ) -> None:
                local = writer.get_extra_info("sockname")[1]
                task = asyncio.create_task(
                    _handle(client, project, service, spec, local, reader, writer)
                )
                connections.add(task)
                task.add_done_callback(connections.discard)

            try:
                server = await asyncio.start_server(on_connect, address, spec.local)
            except OSError as exc:
                raise CommandError(
                    f"cannot listen on {address}:{spec.local}: {exc.strerror or exc}"
                ) from None
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            click.echo(f"Forwarding from {address}:{port} -> {spec.remote}")
        await asyncio.Event().wait()  # until Ctrl-C
    finally:
        for server in servers:
            server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
