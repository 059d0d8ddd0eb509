"""``caractrl`` (also installed as ``caractl``): the Caravanserai command-line client.

Commands are imported when they run, not when the program starts: the client library
(aiohttp), the API models (pydantic) and YAML take most of a second to import, and
``caractrl --help`` or ``caractrl version --client`` need none of them. ``LAZY_COMMANDS``
names each command's module and the one-line help ``--help`` lists (a unit test checks
it matches the command's own ``short_help``).
"""

from __future__ import annotations

import importlib
import sys
from typing import IO, Any

import click

from cli.context import State, get_state, global_options

# name -> (module:attribute, short help). The order of ``caractrl --help``: the everyday
# commands first, as kubectl lists them.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "apply": ("cli.commands.apply:apply",
              "Create or update projects and nodes from manifests."),
    "get": ("cli.commands.get:get",
            "List projects, nodes or events (table, wide, json, yaml, name)."),
    "describe": ("cli.commands.describe:describe", "Show details of a project or node."),
    "delete": ("cli.commands.delete:delete", "Delete projects or nodes."),
    "diff": ("cli.commands.diff:diff", "Show what apply would change (exit 1 if anything)."),
    "edit": ("cli.commands.edit:edit", "Edit a project or node in your editor."),
    "logs": ("cli.commands.logs:logs", "Print the logs of a project's services."),
    "port-forward": ("cli.commands.port_forward:port_forward",
                     "Forward local ports to a service."),
    "exec": ("cli.commands.exec:exec_", "Run a command in a service's container."),
    "wait": ("cli.commands.wait:wait",
             "Wait until objects reach a phase or condition, or are gone."),
    "convert": ("cli.commands.convert:convert",
                "Print the Project manifest of a Compose file."),
    "label": ("cli.commands.label:label", "Set or remove labels of a project or node."),
    "annotate": ("cli.commands.label:annotate",
                 "Set or remove annotations of a project or node."),
    "explain": ("cli.commands.explain:explain",
                "Document a kind's fields (e.g. project.spec.services)."),
    "cordon": ("cli.commands.nodes:cordon", "Mark nodes unschedulable."),
    "uncordon": ("cli.commands.nodes:uncordon", "Mark nodes schedulable again."),
    "drain": ("cli.commands.nodes:drain", "Move every project off nodes."),
    "token": ("cli.commands.token:token", "Create, list and revoke API tokens."),
    "config": ("cli.commands.config:config", "Show or change the CLI settings file."),
    "version": ("cli.commands.version:version", "Print the client and server versions."),
    "completion": ("cli.commands.completion:completion", "Print a shell completion script."),
}
COMMAND_ORDER = tuple(LAZY_COMMANDS)
# "caractrl" alone prints the help through this UsageError (click >= 8.2): keep it whole.
_SHOW_AS_IS: tuple[type[click.UsageError], ...] = tuple(
    t for t in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if t is not None
)


class OneLineUsageError(click.UsageError):
    """A usage error as one line (kubectl's ``error: ...``), not click's usage block."""

    def __init__(self, original: click.UsageError) -> None:
        super().__init__(original.format_message(), original.ctx)

    def show(self, file: IO[Any] | None = None) -> None:
        hint = ""
        if self.ctx is not None:
            hint = f" (see '{self.ctx.command_path} --help')"
        click.echo(f"Error: {self.format_message()}{hint}", err=True, file=file)


class CaraGroup(click.Group):
    """The root group: every failure below it becomes one ``Error: ...`` line, exit 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(self.commands) | set(LAZY_COMMANDS)
        known = [c for c in COMMAND_ORDER if c in names]
        return known + sorted(names - set(known))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in LAZY_COMMANDS:
            return None
        module, _, attr = LAZY_COMMANDS[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The help lists short helps from the table, so --help imports no command.
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(formatter.width)))
            else:
                rows.append((name, LAZY_COMMANDS[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            import difflib  # only for a mistyped command

            name = args[0] if args else ""
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            if close:
                raise click.UsageError(
                    f"unknown command {name!r}; did you mean {close[0]!r}?", ctx
                ) from None
            raise exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if isinstance(exc, (OneLineUsageError, *_SHOW_AS_IS)):
                raise
            raise OneLineUsageError(exc) from exc
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            raise  # click's main() silences a closed pipe (`caractrl get ... | head`)
        except KeyboardInterrupt:
            # Ctrl-C: the shell's convention (128 + SIGINT), not click's "Aborted!".
            if sys.stderr.isatty():
                click.echo(err=True)  # end the line the terminal's "^C" is on
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            from cli.errors import ReportedError

            state = get_state(ctx)
            raise ReportedError(
                exc, prog=ctx.find_root().info_name or "caractrl", debug=state.debug
            ) from exc

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            # An error in the root's own options (``caractrl --outptu json``).
            if isinstance(exc, (OneLineUsageError, *_SHOW_AS_IS)):
                raise
            raise OneLineUsageError(exc) from exc


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


def main() -> None:
    """Entry point of ``caractrl`` and ``caractl``."""
    try:
        cli.main(obj=State())
    except KeyboardInterrupt:  # before or after a command ran (e.g. while importing it)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
