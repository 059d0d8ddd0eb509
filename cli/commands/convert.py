"""``caractrl convert -f compose.yaml``: print the Project a Compose file becomes."""

from __future__ import annotations

import os
import sys

import click

from cli.compose import expand_compose, is_compose
from cli.context import get_state, global_options
from cli.errors import CommandError
from cli.manifests import read_documents, validate_documents
from cli.printers import OutputFormat, dump_json, dump_yaml


@click.command("convert", short_help="Print the Project manifest of a Compose file.")
@click.option("-f", "--filename", "filenames", multiple=True, required=True,
              metavar="FILE|-", help="Compose file, or - for stdin (repeatable).")
@click.option("-p", "--project-name", default=None,
              help="Project name (default: the file's name:, else its directory).")
@global_options
def convert(filenames: tuple[str, ...], project_name: str | None) -> None:
    """Convert a Compose file (compose.yaml) into a Caravanserai Project manifest.

    Mapped: image, command/entrypoint, environment and env_file, ports and expose, named
    volumes, restart, healthcheck, depends_on, deploy.resources, mem_limit/cpus, labels.
    Every other key is reported on stderr with its service: an error where ignoring it
    would change what runs (nothing is printed then), a warning otherwise. ${VAR:-default}
    is interpolated from the environment and the .env file next to the Compose file.
    Prints YAML, or JSON with -o json.

    \\b
    Examples:
      caractrl convert -f compose.yaml > project.yaml
      caractrl convert -f compose.yaml -p shop -o json
    """
    raw = read_documents(filenames, sys.stdin)
    if not any(is_compose(d.data) for d in raw):
        raise CommandError("no Compose file given (expected a top-level services mapping "
                           "and no apiVersion)")
    documents, warnings = expand_compose(raw, project_name, os.environ)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    manifests = validate_documents(documents)
    out = [m.document.data for m in manifests]
    if get_state().output is OutputFormat.JSON:
        for item in out:
            click.echo(dump_json(item))
    else:
        click.echo("---\n".join(dump_yaml(item) for item in out), nl=False)
