"""``caractrl logs PROJECT[/SERVICE]``: container output through the server."""

from __future__ import annotations

import asyncio
import sys
from typing import BinaryIO

import click

from caravanserai.api import NotFound, Project
from caravanserai.client.http import CaravanseraiClient
from cli.context import get_state, global_options
from cli.errors import CommandError, not_found
from cli.streams import stream_logs


def split_target(target: str) -> tuple[str, str | None]:
    """``project/service`` or ``project``."""
    project, _, service = target.partition("/")
    if not project or "/" in service:
        raise click.BadParameter(
            f"{target!r}: expected PROJECT or PROJECT/SERVICE", param_hint="'TARGET'"
        )
    return project, service or None


class _Prefixer:
    """Writes whole lines of one service with a Compose-style ``name | `` prefix."""

    def __init__(self, out: BinaryIO, prefix: bytes) -> None:
        self.out = out
        self.prefix = prefix
        self.partial = b""

    def feed(self, chunk: bytes) -> None:
        data = self.partial + chunk
        *lines, self.partial = data.split(b"\n")
        for line in lines:
            self.out.write(self.prefix + line + b"\n")
        if lines:
            self.out.flush()

    def close(self) -> None:
        if self.partial:
            self.out.write(self.prefix + self.partial + b"\n")
            self.partial = b""
            self.out.flush()


@click.command("logs", short_help="Print the logs of a project's services.")
@click.argument("target", metavar="PROJECT[/SERVICE]")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new output (Ctrl-C to stop).")
@click.option("--tail", type=int, default=-1, show_default="all",
              help="Lines from the end of the log to show (-1: all).")
@click.option("--timestamps", is_flag=True, help="Prefix each line with its RFC 3339 time.")
@click.option("--prefix/--no-prefix", default=None,
              help="Prefix lines with the service name [default: when showing several].")
@global_options
def logs(
    target: str, follow: bool, tail: int, timestamps: bool, prefix: bool | None
) -> None:
    """Print the logs of a project's services.

    Without a service, every service of the project is shown, each line prefixed with its
    service name (as docker compose logs does).

    \b
    Examples:
      caractrl logs wordpress/db
      caractrl logs wordpress -f --tail 20
      caractrl logs my-project --timestamps
    """
    state = get_state()
    project, service = split_target(target)
    state.run_until_interrupted(
        lambda c: _logs(c, project, service, follow, tail, timestamps, prefix)
    )


async def _logs(
    client: CaravanseraiClient,
    project: str,
    service: str | None,
    follow: bool,
    tail: int,
    timestamps: bool,
    prefix: bool | None,
) -> None:
    try:
        obj: Project = await client.projects.get(project)
    except NotFound:
        raise not_found("Project", project) from None
    names = [s.name for s in obj.spec.services]
    if service is not None and service not in names:
        raise CommandError(
            f'project "{project}" has no service "{service}" (services: {", ".join(names)})'
        )
    services = [service] if service else names
    use_prefix = prefix if prefix is not None else len(services) > 1
    width = max(len(s) for s in services)
    out = sys.stdout.buffer

    async def one(name: str) -> None:
        writer = _Prefixer(out, f"{name:<{width}} | ".encode() if use_prefix else b"")
        try:
            async for chunk in stream_logs(
                client, project, name, follow=follow,
                tail=None if tail < 0 else tail, timestamps=timestamps,
            ):
                if use_prefix:
                    writer.feed(chunk)
                else:
                    out.write(chunk)
                    out.flush()
        finally:
            writer.close()

    # One stream per service, concurrently: lines appear as each service writes them.
    async with asyncio.TaskGroup() as tg:
        for name in services:
            tg.create_task(one(name))
