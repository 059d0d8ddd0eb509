"""``caractrl token create|list|revoke``: API tokens (view / edit / admin, and join tokens
for adding nodes). The secret is printed once, by ``create``; the server keeps only a hash."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from caravanserai.api.tokens import TokenCreate, TokenCreated, TokenInfo, TokenRole
from caravanserai.client.http import CaravanseraiClient
from cli.config import ConfigError, parse_timeout
from cli.context import get_state, global_options
from cli.formatting import Table, age, or_placeholder, rfc3339
from cli.printers import OutputFormat, dump_json, dump_yaml


@click.group("token", short_help="Create, list and revoke API tokens.")
@global_options
def token() -> None:
    """Create, list and revoke API tokens (needs an admin token).

    \b
    Roles:
      view   read projects, nodes and leases; logs
      edit   also create, change and delete projects; port-forward, exec
      admin  everything: nodes, cordon/drain, bindings, leases, tokens
      join   only for adding a node: cara-agent exchanges it for the node's own credential
    """


def _parse_ttl(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        seconds = parse_timeout(value, "--ttl")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--ttl'") from None
    if seconds < 1:
        raise click.BadParameter("must be at least 1s", param_hint="'--ttl'")
    return int(seconds)


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in TokenRole]), required=True,
              help="What the token may do.")
@click.option("--ttl", default=None, metavar="DURATION",
              help="Lifetime (e.g. 24h, 30m); default: until revoked.")
@global_options
def create(name: str, role: str, ttl: str | None) -> None:
    """Create a token and print its secret (shown only this once).

    \b
    Examples:
      caractrl token create alice --role edit
      caractrl token create ci --role view --ttl 24h
      caractrl token create workers --role join
    """
    ttl_seconds = _parse_ttl(ttl)
    state = get_state()

    async def call(client: CaravanseraiClient) -> TokenCreated:
        return await client.tokens.create(
            TokenCreate(name=name, role=TokenRole(role), ttl_seconds=ttl_seconds)
        )

    created = state.run(call)
    if state.output is OutputFormat.JSON:
        click.echo(dump_json(created.to_wire()))
        return
    if state.output is OutputFormat.YAML:
        click.echo(dump_yaml(created.to_wire()).rstrip("\n"))
        return
    until = f", expires {rfc3339(created.expires_at)}" if created.expires_at else ""
    click.echo(f'token "{created.name}" created (role {created.role}{until}); '
               "it is shown only now:", err=True)
    click.echo(created.token)


@token.command("list")
@global_options
def list_() -> None:
    """List tokens (names, roles, expiry; never the secrets).

    Node credentials appear as node:NAME (revoke one to cut a node off).
    """
    state = get_state()

    async def call(client: CaravanseraiClient) -> list[TokenInfo]:
        return await client.tokens.list()

    tokens = state.run(call)
    if state.output in (OutputFormat.JSON, OutputFormat.YAML):
        doc = {"items": [t.to_wire() for t in tokens]}
        text = dump_json(doc) if state.output is OutputFormat.JSON else dump_yaml(doc)
        click.echo(text.rstrip("\n"))
        return
    if not tokens:
        click.echo("No tokens found.", err=True)
        return
    now = datetime.now(UTC)
    rows = [
        [t.name, t.role, or_placeholder(t.node),
         "expired" if t.expires_at and t.expires_at <= now else or_placeholder(
             rfc3339(t.expires_at) if t.expires_at else None, "never"),
         age(t.created_at, now)]
        for t in tokens
    ]
    for line in Table(["name", "role", "node", "expires", "age"]).render(rows):
        click.echo(line)


@token.command("revoke")
@click.argument("name")
@global_options
def revoke(name: str) -> None:
    """Revoke a token: it stops working at once.

    \b
    Examples:
      caractrl token revoke ci
      caractrl token revoke node:worker-3    # cut a node off (it must join again)
    """
    state = get_state()

    async def call(client: CaravanseraiClient) -> None:
        await client.tokens.revoke(name)

    state.run(call)
    click.echo(f'token "{name}" revoked')
