"""caractrl's text helpers: kubectl's AGE, placeholders, aligned tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cli.formatting import Table, age, human_duration, key_values, timestamp_with_age

NOW = datetime(2026, 4, 7, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (12, "12s"),
        (119, "119s"),
        (120, "2m"),
        (5 * 60 + 30, "5m30s"),
        (9 * 60 + 59, "9m59s"),
        (10 * 60 + 30, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (8 * 3600 + 5 * 60, "8h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (2 * 86400 + 4 * 3600, "2d4h"),
        (8 * 86400 + 4 * 3600, "8d"),
        (400 * 86400, "400d"),
        (2 * 365 * 86400, "2y"),
        (2 * 365 * 86400 + 30 * 86400, "2y30d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_is_kubectls(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_age_of_missing_timestamp_is_unknown() -> None:
    assert age(None, NOW) == "<unknown>"
    assert age(NOW - timedelta(seconds=12), NOW) == "12s"


def test_timestamp_with_age_past_and_future() -> None:
    assert timestamp_with_age(NOW - timedelta(seconds=12), NOW) == "2026-04-07T11:59:48Z (12s ago)"
    assert timestamp_with_age(NOW + timedelta(hours=3), NOW) == "2026-04-07T15:00:00Z (in 3h)"
    assert timestamp_with_age(None, NOW) == "<none>"


def test_key_values_sorted_or_none() -> None:
    assert key_values({}) == "<none>"
    assert key_values({"b": "2", "a": "1"}) == "a=1, b=2"


def test_table_three_space_gap_left_aligned_no_trailing_blanks() -> None:
    table = Table(["name", "phase", "node", "conditions", "age"])
    lines = table.render([["my-project", "Running", "node-01", "ContainersRunning", "12s"]])
    assert lines == [
        "NAME         PHASE     NODE      CONDITIONS          AGE",
        "my-project   Running   node-01   ContainersRunning   12s",
    ]


def test_table_keeps_the_header_widths_for_later_rows() -> None:
    table = Table(["NAME", "AGE"])
    assert table.render([["a", "1s"]]) == ["NAME   AGE", "a      1s"]
    # A later (watch) row lines up with the header printed before.
    assert table.render([["b", "2s"]], header=False) == ["b      2s"]
    # A longer value overflows its own row only; the rows after it line up again.
    assert table.render([["much-longer", "3s"]], header=False) == ["much-longer   3s"]
    assert table.render([["c", "4s"]], header=False) == ["c      4s"]
