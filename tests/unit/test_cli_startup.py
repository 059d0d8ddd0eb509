"""caractrl starts fast: ``--help`` and ``version --client`` import neither the client
library nor the API models nor YAML (hack/bench/cli.py measures the time itself)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from cli.main import LAZY_COMMANDS, cli

HEAVY = ("aiohttp", "pydantic", "ruamel", "psycopg", "structlog", "caravanserai.api")

PROBE = """
import sys
from cli.main import cli
try:
    cli.main({args!r}, prog_name="caractrl")
except SystemExit:
    pass
heavy = sorted({{m for m in sys.modules for h in {heavy!r} if m == h or m.startswith(h + ".")}})
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("args", [["--help"], ["version", "--client"], ["get", "--help"]])
def test_light_commands_import_nothing_heavy(args: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    if args == ["get", "--help"]:
        return  # a command's own help may import what the command needs; only no crash
    assert last == "HEAVY []", last


def test_lazy_table_matches_the_commands() -> None:
    """``--help`` lists the table's short help: it must be each command's own."""
    ctx = click.Context(cli)
    for name, (_, short_help) in LAZY_COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.short_help == short_help, name


def test_no_arguments_still_print_the_help() -> None:
    r = subprocess.run([sys.executable, "-m", "cli.main"], capture_output=True, text=True,
                       timeout=60)
    assert "Commands:" in r.stdout + r.stderr and "port-forward" in r.stdout + r.stderr
