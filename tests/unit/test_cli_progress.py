"""Progress lines appear on a terminal only; watch rows line up with the header."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta

from caravanserai.api import Project
from cli.printers import OutputFormat, ResourcePrinter
from cli.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_tty() -> None:
    async def go(stream: io.StringIO) -> None:
        async with Progress(stream) as p:
            p.update('waiting for project "x" to be Running: Pending')
            await asyncio.sleep(0.01)

    piped = io.StringIO()
    asyncio.run(go(piped))
    assert piped.getvalue() == ""
    tty = Tty()
    asyncio.run(go(tty))
    out = tty.getvalue()
    assert 'waiting for project "x" to be Running: Pending (0s)' in out
    assert out.endswith("\r\x1b[K")  # the line is erased when the wait ends


NOW = datetime(2026, 4, 7, 12, 0, tzinfo=UTC)


def project(name: str, phase: str) -> Project:
    return Project.model_validate(
        {
            "apiVersion": "caravanserai/v1",
            "kind": "Project",
            "metadata": {
                "name": name,
                "creationTimestamp": (NOW - timedelta(seconds=3)).isoformat(),
            },
            "spec": {"services": [{"name": "web", "image": "nginx"}]},
            "status": {"phase": phase},
        }
    )


def test_watch_rows_and_events_column() -> None:
    lines: list[str] = []
    p = ResourcePrinter(
        "Project", OutputFormat.TABLE, lines.append, watch_events=True, now=lambda: NOW
    )
    p.presize_for_watch()
    p.print_event(project("my-project", "Pending"), "ADDED")
    p.print_event(project("my-project", "Running"), "MODIFIED")
    assert lines == [
        "EVENT      NAME         PHASE         NODE     CONDITIONS   AGE",
        "ADDED      my-project   Pending       <none>   -            3s",
        "MODIFIED   my-project   Running       <none>   -            3s",
    ]


def test_watch_yaml_documents_are_separated() -> None:
    lines: list[str] = []
    p = ResourcePrinter("Project", OutputFormat.YAML, lines.append)
    p.print_event(project("a", "Pending"), "ADDED")
    p.print_event(project("a", "Running"), "MODIFIED")
    text = "\n".join(lines)
    assert text.count("\n---\n") == 1 and text.startswith("apiVersion: caravanserai/v1")


def _starts(line: str) -> list[int]:
    """Where each column starts (after a run of 2+ blanks), for comparing alignment."""
    import re

    return [0] + [m.end() for m in re.finditer(r"\s{2,}", line)]


def test_watch_rows_after_the_first_list_line_up_with_the_header() -> None:
    lines: list[str] = []
    p = ResourcePrinter("Project", OutputFormat.TABLE, lines.append, now=lambda: NOW)
    p.presize_for_watch()
    # The initial list is one table sized to all of its rows ...
    p.print_events([project("a", "Pending"), project("a-much-longer-name", "Running")], "ADDED")
    # ... and every later event is padded to the header's columns, not on its own.
    p.print_event(project("b", "Terminating"), "MODIFIED")
    p.print_event(project("a-much-longer-name", "Failed"), "MODIFIED")
    # A name longer than the column overflows its own row; the next rows line up again.
    p.print_event(project("an-even-longer-name-than-all-before", "Running"), "ADDED")
    p.print_event(project("c", "Running"), "MODIFIED")
    header, *rows = lines
    assert len(rows) == 6
    for row in rows[:4] + rows[5:]:
        assert _starts(row) == _starts(header), (header, row)
