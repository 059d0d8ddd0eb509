"""``caractrl get -w`` against a real server: rows that arrive after the first list line up
with the header's columns (each new row used to be padded on its own)."""

from __future__ import annotations

import re

from test_cli_e2e import PROJECT_YAML, Server, Streaming, caractrl, env, server, streams

__all__ = ["env", "server", "streams"]  # fixtures used by name


def _starts(line: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer(r"\s{2,}", line)]


def _project(name: str) -> str:
    return PROJECT_YAML.replace("name: my-project", f"name: {name}")


def test_rows_after_the_first_list_line_up_with_the_header(
    server: Server, env: dict[str, str], streams: list[Streaming]
) -> None:
    manifests = _project("a") + "---\n" + _project("a-rather-long-project-name")
    assert caractrl(env, "apply", "-f", "-", stdin=manifests).returncode == 0
    watch = Streaming(env, "get", "projects", "-w")
    streams.append(watch)
    header = watch.next_line()
    rows = [watch.next_line(), watch.next_line()]
    assert caractrl(env, "apply", "-f", "-", stdin=_project("b")).returncode == 0
    rows.append(watch.line_matching(r"^b\s"))
    assert caractrl(env, "delete", "project", "a", "--force").returncode == 0
    rows.append(watch.line_matching(r"^a\s"))
    for row in rows:
        assert _starts(row) == _starts(header), "\n".join([header, *rows])
    assert watch.interrupt()[0] == 0
