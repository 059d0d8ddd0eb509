"""``caractrl config``: the CLI's own settings file (server, token, timeout)."""

from __future__ import annotations

import sys

import click

from cli.config import (
    CONFIG_KEYS,
    ConfigError,
    config_path,
    load_config,
    normalize_server,
    parse_timeout,
    save_config,
)
from cli.context import get_state, global_options
from cli.printers import dump_yaml


@click.group("config", short_help="Show or change the CLI settings file.")
@global_options
def config() -> None:
    """Show or change the settings file (server URL, token, timeout).

    Settings are taken from, in order: command-line flags, environment variables
    (CARA_SERVER, CARA_TOKEN, CARA_TIMEOUT), this file, defaults. CARA_CONFIG names
    another file.
    """


def _path() -> str:
    return str(config_path(get_state().env))


@config.command("view")
@click.option("--raw", is_flag=True, help="Show the token instead of REDACTED.")
@global_options
def view(raw: bool) -> None:
    """Print the settings file and the settings in effect.

    \b
    Example:
      caractrl config view
    """
    state = get_state()
    path = config_path(state.env)
    data = load_config(path)
    if data.get("token") and not raw:
        data["token"] = "REDACTED"
    click.echo(f"# {path}{'' if path.exists() else ' (does not exist yet)'}")
    if data:
        click.echo(dump_yaml(data).rstrip("\n"))
    settings = state.settings()
    click.echo(f"# in effect: server {settings.server} (from {settings.server_source})")


def _set(key: str, value: object) -> None:
    path = config_path(get_state().env)
    data = load_config(path)
    data[key] = value
    save_config(path, data)


@config.command("set-server")
@click.argument("url")
@global_options
def set_server(url: str) -> None:
    """Remember the server URL.

    \b
    Example:
      caractrl config set-server http://cara.example.com:8080
    """
    try:
        normalized = normalize_server(url)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'URL'") from None
    _set("server", normalized)
    click.echo(f"server set to {normalized} in {_path()}")


@config.command("set-token")
@click.argument("value", metavar="TOKEN")
@global_options
def set_token(value: str) -> None:
    """Remember a bearer token (the file is made readable by you only).

    TOKEN "-" reads it from standard input (keeps it out of the process list).
    """
    if value == "-":
        value = sys.stdin.readline().strip()
        if not value:
            raise click.BadParameter("no token on standard input", param_hint="'TOKEN'")
    _set("token", value)
    click.echo(f"token set in {_path()}")


@config.command("set-certificate-authority")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, resolve_path=True))
@global_options
def set_certificate_authority(file: str) -> None:
    """Remember the CA file that verifies an https server (a private CA)."""
    _set("certificate-authority", file)
    click.echo(f"certificate-authority set to {file} in {_path()}")


@config.command("set-timeout")
@click.argument("duration")
@global_options
def set_timeout(duration: str) -> None:
    """Remember the timeout of server calls (e.g. 30s, 2m; 0 for none)."""
    try:
        parse_timeout(duration, "DURATION")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'DURATION'") from None
    _set("timeout", duration)
    click.echo(f"timeout set to {duration} in {_path()}")


@config.command("unset")
@click.argument("key", type=click.Choice(CONFIG_KEYS))
@global_options
def unset(key: str) -> None:
    """Forget a setting (back to the environment or the default)."""
    path = config_path(get_state().env)
    data = load_config(path)
    if data.pop(key, None) is None:
        click.echo(f"{key} was not set in {path}")
        return
    save_config(path, data)
    click.echo(f"{key} unset in {path}")


@config.command("path")
@global_options
def path() -> None:
    """Print where the settings file is."""
    click.echo(_path())
