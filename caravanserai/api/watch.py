"""Watch events as they travel from the store to every watcher and over HTTP."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"
    ERROR = "ERROR"


class WatchEvent(BaseModel):
    """One line of a watch stream: ``{"type": ..., "object": ...}``.

    ``object`` is the full resource (as JSON) for ADDED/MODIFIED/DELETED, an object carrying
    only ``metadata.resourceVersion`` for BOOKMARK, and a problem document for ERROR.
    """

    type: EventType
    object: dict[str, Any]
