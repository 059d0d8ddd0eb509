"""``caractrl`` (also installed as ``caractl``): the Caravanserai command-line client."""

from __future__ import annotations

from typing import Any

import click

from cli.commands.apply import apply
from cli.commands.completion import completion
from cli.commands.config import config
from cli.commands.delete import delete
from cli.commands.describe import describe
from cli.commands.get import get
from cli.commands.label import annotate, label
from cli.commands.logs import logs
from cli.commands.nodes import cordon, drain, uncordon
from cli.commands.port_forward import port_forward
from cli.commands.version import version
from cli.context import State, get_state, global_options
from cli.errors import ReportedError

# The order of ``caractrl --help``: the everyday commands first, as kubectl lists them.
COMMAND_ORDER = (
    "apply", "get", "describe", "delete", "logs", "port-forward",
    "config", "version", "completion",
)


class CaraGroup(click.Group):
    """The root group: every failure below it becomes one ``Error: ...`` line, exit 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        known = [c for c in COMMAND_ORDER if c in self.commands]
        return known + sorted(set(self.commands) - set(known))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            raise  # click's main() silences a closed pipe (`caractrl get ... | head`)
        except Exception as exc:
            state = get_state(ctx)
            raise ReportedError(
                exc, prog=ctx.find_root().info_name or "caractrl", debug=state.debug
            ) from exc


@click.group(
    cls=CaraGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(None, "--version", package_name="caravanserai", prog_name="caractrl",
                      message="%(prog)s %(version)s")
@global_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """caractrl controls a Caravanserai cluster: apply project manifests, watch them run.

    Global options (--server, --output, --token, --timeout, --debug) may be given before
    or after the command.

    \b
    Quick start:
      caractrl apply -f project.yaml
      caractrl get projects my-project
      caractrl describe project my-project
      caractrl delete project my-project
    """
    if not isinstance(ctx.obj, State):
        ctx.obj = State()


for _command in (
    apply, get, describe, delete, logs, port_forward, cordon, uncordon, drain, label, annotate,
    config, version, completion,
):
    cli.add_command(_command)


def main() -> None:
    """Entry point of ``caractrl`` and ``caractl``."""
    cli.main(obj=State())


if __name__ == "__main__":  # pragma: no cover
    main()
