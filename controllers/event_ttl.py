"""event-ttl: delete Events once their TTL has passed since their last occurrence.

Kubernetes keeps events for one hour (kube-apiserver's ``--event-ttl``); so do we, by
default (``event_ttl`` / ``CARA_EVENT_TTL``, see :mod:`controllers.settings`). Each event
gets one timer for ``lastTimestamp + ttl``; an aggregated occurrence is an update event
that re-arms it. The delete carries the resourceVersion the decision was made on, so an
occurrence recorded in between (count bumped, lastTimestamp moved) is never lost: the
delete comes back Conflict and the event is looked at again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from caravanserai.api.event import Event
from caravanserai.api.problems import Conflict, NotFound
from caravanserai.client.interface import Client
from caravanserai.informer import (
    Clock,
    Controller,
    ControllerContext,
    Result,
    RunnableController,
    SharedInformer,
)
from controllers.settings import load_settings

__all__ = ["EventExpirer", "controller", "expires_at", "seconds_until_expired"]


def expires_at(event: Event, ttl: float) -> datetime | None:
    """When ``event`` expires: ``ttl`` after its last occurrence (first occurrence or
    creation when that is unknown); None when it carries no time at all."""
    seen = event.last_timestamp or event.first_timestamp or event.metadata.creation_timestamp
    return None if seen is None else seen + timedelta(seconds=ttl)


def seconds_until_expired(event: Event, ttl: float, clock: Clock) -> float:
    """Seconds until ``event`` expires (0 once due; an event without times is due now)."""
    when = expires_at(event, ttl)
    return 0.0 if when is None else clock.until(when)


class EventExpirer:
    """The reconciler: delete one event when it is due, else wait for its time."""

    def __init__(
        self, client: Client, events: SharedInformer[Event], clock: Clock, ttl: float, log: Any
    ) -> None:
        self.client = client
        self.events = events
        self.clock = clock
        self.ttl = ttl
        self.log = log

    async def reconcile(self, name: str) -> Result | None:
        """Delete event ``name`` if it has expired."""
        event = self.events.get(name)
        if event is None:
            return None
        left = seconds_until_expired(event, self.ttl, self.clock)
        if left > 0:
            return Result(requeue_after=left)
        try:
            await self.client.events.delete(
                name, resource_version=event.metadata.resource_version
            )
        except NotFound:
            return None
        except Conflict:
            # A new occurrence arrived since the cache saw it: decide again on the new one.
            return Result(requeue=True)
        self.log.debug(
            "event.expired", kind="Event", name=name, reason=event.reason,
            involved=f"{event.involved_object.kind}/{event.involved_object.name}",
        )
        return None


def controller(ctx: ControllerContext) -> RunnableController:
    """Entry point ``event-ttl``: reconcile every Event."""
    settings = load_settings(ctx.name, ctx.config)
    return (
        Controller.for_(Event)
        .workers(settings.workers)
        .complete(
            lambda c: EventExpirer(
                c.client, c.informers.informer(Event), c.clock, settings.event_ttl, c.log
            )
        )
        .build(ctx)
    )
