"""Events as ``caractrl`` shows them: the ``get events`` table and ``describe``'s ``Events:``
section, both as kubectl prints them.

``get events``::

    LAST SEEN   TYPE      REASON      OBJECT          MESSAGE
    2m          Normal    Scheduled   project/web     Successfully assigned web to node-01
    10s         Warning   BackOff     project/web     Back-off restarting failed container web-api

``describe`` (newest last, as kubectl; ``(x5 over 2m)`` when an event was aggregated)::

    Events:
      Type      Reason     Age               From         Message
      ----      ------     ---               ----         -------
      Warning   BackOff    10s (x5 over 2m)  cara-agent   Back-off restarting failed container
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import click

from caravanserai.api.event import Event
from cli.formatting import NONE, Table, age, human_duration

EVENT_HEADERS = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
_DESCRIBE_HEADERS = ["Type", "Reason", "Age", "From", "Message"]
# Where an event's kind is known to the CLI, the object column uses its lowercase kind.
_EPOCH = datetime.min.replace(tzinfo=UTC)


def last_seen(event: Event) -> datetime:
    """When the event last happened (its first time, or creation, when that is unknown)."""
    return (
        event.last_timestamp
        or event.first_timestamp
        or event.metadata.creation_timestamp
        or _EPOCH
    )


def sort_events(events: Sequence[Event]) -> list[Event]:
    """Oldest first by last occurrence (kubectl sorts ``get events`` so; the newest is at
    the bottom, next to the prompt)."""
    return sorted(events, key=lambda e: (last_seen(e), e.metadata.name))


def object_ref(event: Event) -> str:
    """``project/web``: the involved object as kubectl's OBJECT column writes it."""
    return f"{event.involved_object.kind.lower()}/{event.involved_object.name}"


def parse_for(value: str) -> tuple[str, str]:
    """``--for project/web`` → ``("Project", "web")``; a UsageError otherwise."""
    kind, sep, name = value.partition("/")
    aliases = {"project": "Project", "projects": "Project", "proj": "Project",
               "node": "Node", "nodes": "Node", "no": "Node"}
    if not sep or not name or kind.lower() not in aliases:
        raise click.UsageError(f"--for {value!r}: use project/NAME or node/NAME")
    return aliases[kind.lower()], name


def event_row(event: Event, now: datetime) -> list[str]:
    return [
        age(last_seen(event), now),
        event.type.value,
        event.reason,
        object_ref(event),
        event.message.replace("\n", " "),
    ]


def events_table(events: Sequence[Event], now: datetime | None = None) -> list[str]:
    """The ``get events`` table, sorted by last occurrence."""
    now = now or datetime.now(UTC)
    return Table(EVENT_HEADERS).render([event_row(e, now) for e in sort_events(events)])


def describe_age(event: Event, now: datetime) -> str:
    """``10s``, or ``10s (x5 over 2m)`` for an event seen five times over two minutes."""
    text = age(last_seen(event), now)
    if event.count > 1 and event.first_timestamp is not None:
        span = human_duration((now - event.first_timestamp).total_seconds())
        text += f" (x{event.count} over {span})"
    return text


def describe_events(events: Sequence[Event], now: datetime | None = None) -> list[str]:
    """The lines of ``describe``'s closing section (``Events:  <none>`` when empty)."""
    if not events:
        return [f"Events:  {NONE}"]
    now = now or datetime.now(UTC)
    rows = [
        [e.type.value, e.reason, describe_age(e, now),
         e.reporting_component or NONE, e.message.replace("\n", " ")]
        for e in sort_events(events)
    ]
    table = Table(_DESCRIBE_HEADERS)
    table.headers = list(_DESCRIBE_HEADERS)  # describe writes them capitalised, not shouted
    lines = table.render([["-" * len(h) for h in _DESCRIBE_HEADERS], *rows])
    return ["Events:", *("  " + line for line in lines)]
