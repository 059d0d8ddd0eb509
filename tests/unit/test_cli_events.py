"""How caractrl prints Events: the get events table (sorted by last occurrence), the
describe section with kubectl's "(xN over T)", --for parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest

from caravanserai.api.event import Event, EventKind, new_event
from cli.events import describe_events, events_table, parse_for

NOW = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)


def ev(reason: str, ago: float, *, count: int = 1, over: float = 0.0,
       type_: EventKind = EventKind.NORMAL, kind: str = "Project", name: str = "web",
       message: str = "m") -> Event:
    e = new_event(kind, name, reason, message, type_=type_, component="cara-agent",
                  now=NOW - timedelta(seconds=ago))
    return e.model_copy(update={
        "count": count, "first_timestamp": NOW - timedelta(seconds=ago + over)})


def test_get_events_is_sorted_by_last_seen_with_kubectl_columns() -> None:
    lines = events_table([
        ev("BackOff", 10, type_=EventKind.WARNING, message="Back-off restarting"),
        ev("Scheduled", 120, message="Successfully assigned web to n1"),
        ev("Ready", 30, kind="Node", name="n1"),
    ], NOW)
    assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [line.split()[2] for line in lines[1:]] == ["Scheduled", "Ready", "BackOff"]
    assert lines[1].split()[:4] == ["2m", "Normal", "Scheduled", "project/web"]
    assert lines[3].endswith("Back-off restarting")
    assert "node/n1" in lines[2]


def test_describe_section_shows_aggregation_and_source() -> None:
    lines = describe_events([
        ev("BackOff", 10, count=5, over=110, type_=EventKind.WARNING, message="Back-off"),
        ev("Started", 200, message="Started container web-api"),
    ], NOW)
    assert lines[0] == "Events:"
    assert lines[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert lines[2].split() == ["----", "------", "---", "----", "-------"]
    assert lines[3].split()[:2] == ["Normal", "Started"]
    assert "10s (x5 over 2m)" in lines[4]
    assert lines[4].split()[-2:] == ["cara-agent", "Back-off"]
    assert all(line.startswith("  ") for line in lines[1:])


def test_describe_without_events() -> None:
    assert describe_events([], NOW) == ["Events:  <none>"]


def test_for_names_an_object() -> None:
    assert parse_for("project/web") == ("Project", "web")
    assert parse_for("no/n1") == ("Node", "n1")
    for bad in ("web", "pod/web", "project/"):
        with pytest.raises(click.UsageError):
            parse_for(bad)
