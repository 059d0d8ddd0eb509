"""What ``caractrl wait`` and ``apply --wait`` wait for, and how they show the way there.

``parse_condition`` reads kubectl's ``--for`` forms; ``condition_met`` decides on one object
(None: it is gone). Both are pure. ``LiveStatus`` shows one line per object: redrawn in
place on a terminal (as Docker Compose does while a stack comes up), one plain line per
change when stderr is a pipe or a file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

from caravanserai.api import ConditionStatus, Node, Project

# A project has no "Ready" condition of its own: its readiness is its containers running.
_PROJECT_CONDITION_ALIASES = {"Ready": "ContainersRunning"}


@dataclass(frozen=True)
class WaitCondition:
    """One ``--for``: ``delete``, ``phase=VALUE`` or ``condition=TYPE[=STATUS]``."""

    what: str  # delete | phase | condition
    name: str = ""  # the phase, or the condition's type
    status: str = "True"  # for conditions

    def describe(self) -> str:
        if self.what == "delete":
            return "deletion"
        if self.what == "phase":
            return f"phase {self.name}"
        return f"condition {self.name}={self.status}"


class BadCondition(ValueError):
    pass


def parse_condition(text: str) -> WaitCondition:
    """``delete`` | ``phase=Running`` | ``jsonpath={.status.phase}=Running`` |
    ``condition=Ready`` | ``condition=Ready=False``."""
    if text == "delete":
        return WaitCondition("delete")
    key, sep, rest = text.partition("=")
    if key == "jsonpath" and rest in ("{.status.phase}", "'{.status.phase}'"):
        raise BadCondition("use --for=phase=VALUE for the phase")
    if not sep or not rest:
        raise BadCondition(
            f"unknown --for {text!r}: use delete, phase=PHASE or condition=TYPE[=STATUS]"
        )
    if key == "phase":
        return WaitCondition("phase", rest)
    if key == "condition":
        ctype, _, status = rest.partition("=")
        status = status or "True"
        if status.lower() not in ("true", "false", "unknown"):
            raise BadCondition(f"condition status {status!r}: use True, False or Unknown")
        return WaitCondition("condition", ctype, status.capitalize())
    raise BadCondition(
        f"unknown --for {text!r}: use delete, phase=PHASE or condition=TYPE[=STATUS]"
    )


def condition_met(cond: WaitCondition, obj: Project | Node | None) -> bool:
    if cond.what == "delete":
        return obj is None
    if obj is None:
        return False
    if cond.what == "phase":
        phase = obj.status.phase if isinstance(obj, Project) else obj.status.state
        return phase is not None and str(phase.value).lower() == cond.name.lower()
    ctype = cond.name
    if isinstance(obj, Project):
        ctype = _PROJECT_CONDITION_ALIASES.get(ctype, ctype)
    for c in obj.status.conditions:
        if c.type.lower() == ctype.lower():
            return c.status == ConditionStatus(cond.status)
    return False


def progress_text(obj: Project | Node | None) -> str:
    """``Scheduled on node-01, 1/3 services running`` (a project), ``Ready`` (a node)."""
    if obj is None:
        return "gone"
    if isinstance(obj, Node):
        return obj.status.state.value if obj.status.state else "<unknown>"
    status = obj.status
    phase = status.phase.value if status.phase else "<unknown>"
    total = len(obj.spec.services)
    running = sum(1 for s in status.services if (s.state or "").lower() == "running")
    where = f" on {status.node_ref}" if status.node_ref else ""
    noun = "service" if total == 1 else "services"
    return f"{phase}{where}, {running}/{total} {noun} running"


class LiveStatus:
    """One line per object. On a terminal the lines are redrawn in place and erased at the
    end (the result lines follow); otherwise each change is one plain line."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.lines: dict[str, str] = {}
        self._drawn = 0

    def update(self, key: str, text: str) -> None:
        if self.lines.get(key) == text:
            return
        self.lines[key] = text
        if self.tty:
            self._redraw()
        else:
            self.stream.write(f"{key}: {text}\n")
            self.stream.flush()

    def _redraw(self) -> None:
        out = [f"\x1b[{self._drawn}A"] if self._drawn else []
        width = max(len(k) for k in self.lines)
        for key, text in self.lines.items():
            out.append(f"\r\x1b[K{key.ljust(width)}  {text}\n")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(self.lines)

    def close(self) -> None:
        if self.tty and self._drawn:
            # Erase what we drew: the result lines take its place.
            self.stream.write(f"\x1b[{self._drawn}A\r\x1b[J")
            self.stream.flush()
            self._drawn = 0

    def __enter__(self) -> LiveStatus:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
