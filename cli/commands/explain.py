"""``caractrl explain project[.FIELD...]``: documentation of a kind's fields."""

from __future__ import annotations

import click

from cli.context import global_options
from cli.kinds import ALIASES


@click.command("explain", short_help="Document a kind's fields (e.g. project.spec.services).")
@click.argument("field", metavar="KIND[.FIELD...]")
@global_options
def explain(field: str) -> None:
    """Describe a kind or one of its fields: type, description, sub-fields (from the JSON
    Schemas of the API, the same as schemas/*.json). Nothing is asked of the server.

    \b
    Examples:
      caractrl explain project
      caractrl explain project.spec.services
      caractrl explain node.status.network
    """
    from caravanserai.api.jsonschema import node_schema, project_schema
    from cli.explain import ExplainError
    from cli.explain import explain as render

    head, *path = field.split(".")
    kind = ALIASES.get(head.lower())
    if kind is None:
        raise click.UsageError(f"unknown resource type {head!r} (use project or node)")
    schema = project_schema() if kind == "Project" else node_schema()
    try:
        click.echo(render(schema, kind, [p for p in path if p]))
    except ExplainError as exc:
        raise click.UsageError(str(exc)) from None
