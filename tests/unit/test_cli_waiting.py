"""The decisions of ``caractrl wait`` / ``apply --wait`` and their live display."""

from __future__ import annotations

import io

import pytest

from caravanserai.api import Node, Project
from cli.waiting import (
    BadCondition,
    LiveStatus,
    WaitCondition,
    condition_met,
    parse_condition,
    progress_text,
)


def project(phase: str | None = None, services: int = 2, running: int = 0,
            conditions: list[dict[str, str]] | None = None) -> Project:
    status: dict[str, object] = {"conditions": conditions or []}
    if phase:
        status["phase"] = phase
    if phase in ("Scheduled", "Running", "Failed"):
        status["nodeRef"] = "node-01"
    status["services"] = [
        {"name": f"s{i}", "state": "running" if i < running else "created"}
        for i in range(services)
    ]
    return Project.model_validate({
        "apiVersion": "caravanserai/v1", "kind": "Project", "metadata": {"name": "p"},
        "spec": {"services": [{"name": f"s{i}", "image": "x"} for i in range(services)]},
        "status": status,
    })


@pytest.mark.parametrize(("text", "parsed"), [
    ("delete", WaitCondition("delete")),
    ("phase=Running", WaitCondition("phase", "Running")),
    ("condition=Ready", WaitCondition("condition", "Ready", "True")),
    ("condition=Ready=false", WaitCondition("condition", "Ready", "False")),
])
def test_parse_condition(text: str, parsed: WaitCondition) -> None:
    assert parse_condition(text) == parsed


@pytest.mark.parametrize("text", ["", "phase", "phase=", "color=blue", "condition=Ready=maybe"])
def test_parse_condition_refuses(text: str) -> None:
    with pytest.raises(BadCondition):
        parse_condition(text)


def test_condition_met() -> None:
    running = project("Running", running=2, conditions=[
        {"type": "ContainersRunning", "status": "True"}])
    assert condition_met(parse_condition("phase=Running"), running)
    assert condition_met(parse_condition("phase=running"), running)
    assert not condition_met(parse_condition("phase=Running"), project("Pending"))
    assert not condition_met(parse_condition("phase=Running"), None)
    # A project is Ready when its containers run.
    assert condition_met(parse_condition("condition=Ready"), running)
    assert not condition_met(parse_condition("condition=Ready"), project("Scheduled"))
    assert condition_met(parse_condition("condition=ContainersRunning=True"), running)
    assert not condition_met(parse_condition("condition=ContainersRunning=False"), running)
    assert condition_met(parse_condition("delete"), None)
    assert not condition_met(parse_condition("delete"), running)
    node = Node.model_validate({
        "apiVersion": "caravanserai/v1", "kind": "Node", "metadata": {"name": "n"},
        "status": {"state": "Ready", "conditions": [{"type": "Ready", "status": "True"}]},
    })
    assert condition_met(parse_condition("condition=Ready"), node)
    assert condition_met(parse_condition("phase=Ready"), node)


def test_progress_text() -> None:
    assert progress_text(project("Pending")) == "Pending, 0/2 services running"
    assert progress_text(project("Running", running=1)) == (
        "Running on node-01, 1/2 services running"
    )
    assert progress_text(project("Running", services=1, running=1)) == (
        "Running on node-01, 1/1 service running"
    )
    assert progress_text(None) == "gone"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_status_plain_lines_when_piped() -> None:
    out = io.StringIO()
    with LiveStatus(out) as live:
        live.update("project/a", "Pending")
        live.update("project/b", "Pending")
        live.update("project/a", "Pending")  # no change: no line
        live.update("project/a", "Running")
    assert out.getvalue() == (
        "project/a: Pending\nproject/b: Pending\nproject/a: Running\n"
    )


def test_live_status_redraws_in_place_on_a_terminal() -> None:
    out = Tty()
    with LiveStatus(out) as live:
        live.update("project/a", "Pending")
        live.update("project/bb", "Pending")
        live.update("project/a", "Running")
    text = out.getvalue()
    # The last frame: both lines, aligned; the cursor went back up over the previous frame.
    assert text.count("\x1b[2A") == 2  # one redraw over 2 lines, and the final erase
    assert "\r\x1b[Kproject/a   Running\n\r\x1b[Kproject/bb  Pending\n" in text
    assert text.endswith("\x1b[2A\r\x1b[J")
