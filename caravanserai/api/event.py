"""Event: a record of something the system did to an object, and why (Kubernetes' core/v1
Event, the form ``kubectl get events`` and ``describe``'s Events section show).

Writers — the scheduler, the agents and the server — report occurrences through one
recorder (``caravanserai.client.recorder``); repeated occurrences of the same thing are
aggregated into one object whose ``count`` and ``lastTimestamp`` grow, so a crash loop is
one line, not thousands. The object's name is derived from what is aggregated
(:func:`event_name`), which makes ``POST /api/v1/events`` an upsert: the first occurrence
creates the object, later ones bump it. Events expire ``ttl`` after their last occurrence
(the ``event-ttl`` controller, one hour by default).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from caravanserai.api.base import API_VERSION, ListMeta, ObjectMeta, Timestamp, WireModel
from caravanserai.api.validation import HOSTNAME_MAX, HOSTNAME_PATTERN

MAX_MESSAGE = 1024
"""Longest message kept (longer ones are cut with an ellipsis, as Kubernetes does)."""

MAX_REASON = 128
MAX_COMPONENT = 128


class EventKind(StrEnum):
    """``type``: Normal (things going as planned) or Warning (something the user may act on)."""

    NORMAL = "Normal"
    WARNING = "Warning"


class EventMeta(ObjectMeta):
    """An Event's metadata: its name is a DNS subdomain, ``{object name}.{hash}``."""

    name: str = Field(min_length=1, max_length=HOSTNAME_MAX, pattern=f"^{HOSTNAME_PATTERN}$")


class ObjectReference(WireModel):
    """The object an event is about."""

    kind: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z][A-Za-z0-9]*$")
    name: str = Field(min_length=1, max_length=253, pattern=r"^[^\u0000]*$")
    uid: str | None = Field(default=None, max_length=64, pattern=r"^[^\u0000]*$")


class Event(WireModel):
    """Something that happened to an object: who reported it, why, how often and when."""

    api_version: Literal["caravanserai/v1"] = API_VERSION
    kind: Literal["Event"] = "Event"
    metadata: EventMeta
    involved_object: ObjectReference
    type: EventKind = EventKind.NORMAL
    reason: str = Field(
        min_length=1, max_length=MAX_REASON, pattern=r"^[A-Za-z][A-Za-z0-9]*$"
    )
    message: str = Field(default="", max_length=MAX_MESSAGE, pattern=r"^[^\u0000]*$")
    count: int = Field(default=1, ge=1, le=2**31 - 1)
    first_timestamp: Timestamp | None = None
    last_timestamp: Timestamp | None = None
    reporting_component: str = Field(
        default="", max_length=MAX_COMPONENT, pattern=r"^[^\u0000]*$"
    )
    reporting_instance: str = Field(
        default="", max_length=MAX_COMPONENT, pattern=r"^[^\u0000]*$"
    )


class EventList(WireModel):
    api_version: Literal["caravanserai/v1"] = API_VERSION
    kind: Literal["EventList"] = "EventList"
    metadata: ListMeta
    items: list[Event]


@dataclass(frozen=True)
class RecordKind:
    """A kind the system writes about other objects (served, listed and watched like the
    others, never applied by users)."""

    kind: str
    plural: str
    model: type[Event]
    list_model: type[EventList]


EVENTS = RecordKind("Event", "events", Event, EventList)


def truncate_message(message: str) -> str:
    """``message`` cut to :data:`MAX_MESSAGE` characters (an ellipsis marks the cut)."""
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def aggregation_key(event: Event) -> tuple[str, ...]:
    """What makes two occurrences "the same event" (Kubernetes' EventAggregator key):
    the involved object, type, reason, message and the reporting source."""
    obj = event.involved_object
    return (
        obj.kind,
        obj.name,
        obj.uid or "",
        event.type.value,
        event.reason,
        event.message,
        event.reporting_component,
        event.reporting_instance,
    )


def event_name(event: Event) -> str:
    """The object name of an occurrence: ``{object name}.{hash of its aggregation key}``.

    Deterministic, so every writer of the same occurrence addresses the same object (the
    server aggregates into it). A DNS subdomain of at most 253 characters.
    """
    digest = hashlib.sha256("\x00".join(aggregation_key(event)).encode()).hexdigest()[:16]
    return f"{event.involved_object.name[:200]}.{digest}"


def new_event(
    kind: str,
    name: str,
    reason: str,
    message: str,
    *,
    type_: EventKind = EventKind.NORMAL,
    uid: str | None = None,
    component: str = "",
    instance: str = "",
    now: datetime,
) -> Event:
    """One occurrence, named by :func:`event_name`, first and last seen ``now``."""
    event = Event(
        metadata=EventMeta(name="pending"),
        involved_object=ObjectReference(kind=kind, name=name, uid=uid),
        type=type_,
        reason=reason,
        message=truncate_message(message),
        count=1,
        first_timestamp=now,
        last_timestamp=now,
        reporting_component=component,
        reporting_instance=instance,
    )
    event.metadata.name = event_name(event)
    return event
