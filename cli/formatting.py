"""Small text helpers shared by tables and describe: ages, placeholders, aligned tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

NONE = "<none>"  # an optional value that is not set (a node's IP, a project's node)
UNKNOWN = "<unknown>"  # a value the system should know but does not (yet): phase, state
COLUMN_GAP = "   "  # kubectl's tabwriter padding of 3 spaces


def human_duration(seconds: float) -> str:
    """kubectl's ``duration.HumanDuration``: exact for short spans, coarser as they grow.

    ``12s``, ``119s``, ``2m``, ``5m30s`` (under 10 minutes), ``47m``, ``3h`` / ``3h5m``
    (under 8 hours), ``20h``, ``2d`` / ``2d4h`` (under 8 days), ``30d``, ``2y`` / ``2y30d``.
    Users of kubectl read these at a glance, so we copy it exactly.
    """
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    total = int(seconds)
    if total < 60 * 2:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        secs = total % 60
        return f"{minutes}m" if secs == 0 else f"{minutes}m{secs}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        mins = minutes % 60
        return f"{hours}h" if mins == 0 else f"{hours}h{mins}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rem = hours % 24
        return f"{hours // 24}d" if rem == 0 else f"{hours // 24}d{rem}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def age(ts: datetime | None, now: datetime | None = None) -> str:
    """Time since ``ts`` as kubectl's AGE column; ``<unknown>`` when there is no timestamp."""
    if ts is None:
        return UNKNOWN
    now = now or datetime.now(UTC)
    return human_duration((now - ts).total_seconds())


def rfc3339(ts: datetime | None) -> str:
    if ts is None:
        return NONE
    ts = ts.astimezone(UTC)
    text = ts.isoformat(timespec="microseconds" if ts.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def timestamp_with_age(ts: datetime | None, now: datetime | None = None) -> str:
    """``2026-04-07T10:00:00Z (12s ago)`` or ``in 3h`` for the future, as in describe."""
    if ts is None:
        return NONE
    now = now or datetime.now(UTC)
    delta = (now - ts).total_seconds()
    rel = f"{human_duration(delta)} ago" if delta >= 0 else f"in {human_duration(-delta)}"
    return f"{rfc3339(ts)} ({rel})"


def or_placeholder(value: object, placeholder: str = NONE) -> str:
    return placeholder if value is None or value == "" else str(value)


def key_values(mapping: Mapping[str, str]) -> str:
    """``k=v, k2=v2`` sorted, or ``<none>`` (labels and annotations)."""
    if not mapping:
        return NONE
    return ", ".join(f"{k}={v}" for k, v in sorted(mapping.items()))


class Table:
    """Left-aligned columns separated by three spaces, like kubectl's tabwriter.

    ``widths`` persist across ``render`` calls so that rows printed later by ``get -w`` line
    up with the header printed first: only a render that prints the header sizes the
    columns (to the header and its rows); later rows are padded to those widths, and a
    longer value overflows its own row only, as kubectl's watch output does, instead of
    shifting every row after it.
    """

    def __init__(self, headers: Sequence[str]) -> None:
        self.headers = [h.upper() for h in headers]
        self.widths = [len(h) for h in self.headers]

    def _fit(self, rows: Sequence[Sequence[str]]) -> None:
        for row in rows:
            for i, cell in enumerate(row):
                self.widths[i] = max(self.widths[i], len(cell))

    def _line(self, cells: Sequence[str]) -> str:
        last = len(cells) - 1
        # The last column is not padded: no trailing blanks, as tabwriter.
        return COLUMN_GAP.join(
            cell if i == last else cell.ljust(self.widths[i]) for i, cell in enumerate(cells)
        )

    def render(self, rows: Sequence[Sequence[str]], *, header: bool = True) -> list[str]:
        if header:
            self._fit(rows)
        lines = [self._line(self.headers)] if header else []
        lines.extend(self._line(row) for row in rows)
        return lines
