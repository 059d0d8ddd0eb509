"""Typed watch events: one line of the ``application/x-ndjson`` watch stream, parsed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from pydantic import ValidationError

from caravanserai.api.event import Event
from caravanserai.api.node import Node
from caravanserai.api.problems import CaravanseraiError, Problem, error_from_problem
from caravanserai.api.project import Project
from caravanserai.api.watch import EventType
from caravanserai.client.errors import ProtocolError

T = TypeVar("T", bound=Project | Node | Event)

__all__ = ["WatchEvent", "parse_event"]


@dataclass(frozen=True, slots=True)
class WatchEvent(Generic[T]):
    """A watch event with its object parsed into the resource model.

    - ``ADDED`` / ``MODIFIED`` / ``DELETED``: ``object`` is the resource (for DELETED its last
      state); ``resource_version`` is the event's revision.
    - ``BOOKMARK``: ``object`` is None; ``resource_version`` is a revision the watch can be
      resumed from (no event up to it was left out).
    - ``ERROR``: ``object`` is None; ``error`` is the typed error (``Expired`` for 410: the
      revision left the event log, relist). The stream ends after it.

    This is the typed form of the wire-level :class:`caravanserai.api.WatchEvent`.
    """

    type: EventType
    object: T | None
    resource_version: str
    error: CaravanseraiError | None = None

    @property
    def name(self) -> str | None:
        """The object's name, for ADDED/MODIFIED/DELETED."""
        return self.object.metadata.name if self.object is not None else None


def parse_event(data: Any, model: type[T]) -> WatchEvent[T]:
    """Parse one decoded watch line into a typed event; ProtocolError if it is malformed."""
    if not isinstance(data, dict) or "type" not in data:
        raise ProtocolError(f"malformed watch event: {str(data)[:200]}")
    try:
        type_ = EventType(data["type"])
    except ValueError:
        raise ProtocolError(f"unknown watch event type {data['type']!r}") from None
    obj = data.get("object") or {}
    if type_ is EventType.ERROR:
        try:
            problem = Problem.model_validate(obj)
        except ValidationError:
            problem = Problem(title="Watch error", status=500, detail=str(obj)[:500])
        return WatchEvent(type_, None, "", error_from_problem(problem))
    rv = str(((obj.get("metadata") or {}).get("resourceVersion")) or "")
    if type_ is EventType.BOOKMARK:
        return WatchEvent(type_, None, rv)
    try:
        parsed = cast(T, model.model_validate(obj))
    except ValidationError as exc:
        raise ProtocolError(f"watch event object is not a valid {model.__name__}: {exc}") from exc
    return WatchEvent(type_, parsed, rv)
