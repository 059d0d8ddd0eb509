"""``caractrl completion bash|zsh|fish``: print the shell completion script."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from cli.context import global_options

SHELLS = ("bash", "zsh", "fish")


@click.command("completion", short_help="Print a shell completion script.")
@click.argument("shell", type=click.Choice(SHELLS))
@global_options
def completion(shell: str) -> None:
    """Print the completion script for a shell (commands, options, resource names).

    \b
    Install:
      bash:  echo 'eval "$(caractrl completion bash)"' >> ~/.bashrc
      zsh:   echo 'eval "$(caractrl completion zsh)"' >> ~/.zshrc
      fish:  caractrl completion fish > ~/.config/fish/completions/caractrl.fish
    """
    ctx = click.get_current_context()
    root = ctx.find_root()
    prog = root.info_name or "caractrl"
    # The variable click's main() looks for; the program name decides it (caractl works too).
    complete_var = f"_{prog.replace('-', '_').replace('.', '_')}_COMPLETE".upper()
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click.Choice already limits the shells
        raise click.UsageError(f"unsupported shell {shell!r}")
    assert isinstance(root.command, click.Command)
    click.echo(cls(root.command, {}, prog, complete_var).source())
