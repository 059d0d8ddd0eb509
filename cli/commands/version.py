"""``caractrl version``: the client's version, and the server's when it answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

import caravanserai
from cli.context import get_state, global_options
from cli.output import OutputFormat

if TYPE_CHECKING:
    from caravanserai.client.http import CaravanseraiClient


def client_version() -> str:
    return caravanserai.__version__


@click.command("version", short_help="Print the client and server versions.")
@click.option("--client", "client_only", is_flag=True, help="Only the client's version.")
@global_options
def version(client_only: bool) -> None:
    """Print the client and server versions.

    An unreachable server is reported on the Server Version line, not as a failure: the
    command exits 0 so it can confirm an installation without a running server.

    \b
    Examples:
      caractrl version
      caractrl version -o json
    """
    state = get_state()
    server: dict[str, Any] | None = None
    problem: str | None = None
    if not client_only:
        from cli.errors import explain

        async def ask(client: CaravanseraiClient) -> dict[str, Any]:
            return await client.version()

        try:
            server = state.run(ask)
        except Exception as exc:
            problem, _ = explain(exc)
    fmt = state.output
    if fmt in (OutputFormat.JSON, OutputFormat.YAML):
        from cli.printers import dump_json, dump_yaml  # YAML: imported only when asked for

        doc: dict[str, Any] = {"clientVersion": {"version": client_version()}}
        if server is not None:
            doc["serverVersion"] = server
        elif problem is not None:
            doc["serverError"] = problem
        click.echo(dump_json(doc) if fmt is OutputFormat.JSON else dump_yaml(doc).rstrip("\n"))
        return
    click.echo(f"Client Version: {client_version()}")
    if server is not None:
        click.echo(f"Server Version: {server.get('version', '<unknown>')}")
    elif problem is not None:
        click.echo(f"Server Version: <unreachable: {problem}>")
