"""caractrl explain: fields, types and descriptions from the kinds' JSON Schemas."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import cli


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args), prog_name="caractrl")
    return r.exit_code, r.stdout, r.stderr


def test_explain_a_field_and_its_sub_fields() -> None:
    code, out, _ = run("explain", "project.spec.services")
    assert code == 0
    lines = out.splitlines()
    assert lines[:4] == ["KIND:       Project", "VERSION:    caravanserai/v1", "",
                         "FIELD: services <[]ServiceDef>"]
    assert "  name\t<string> -required-" in lines
    assert "  ports\t<[]PortMapping>" in lines
    assert any("At least one service is required" in line for line in lines)


def test_explain_walks_into_lists_and_shows_enums() -> None:
    code, out, _ = run("explain", "project.spec.services.ports.protocol")
    assert code == 0
    assert "FIELD: protocol <string>" in out and "    tcp" in out and "    udp" in out
    code, out, _ = run("explain", "node")
    assert code == 0 and "  status\t<NodeStatus>" in out


def test_explain_unknown_field_is_one_line() -> None:
    code, _, err = run("explain", "project.spec.nope")
    assert code == 2
    assert err.startswith('Error: field "nope" does not exist in project.spec (fields: ')
    assert len(err.splitlines()) == 1
