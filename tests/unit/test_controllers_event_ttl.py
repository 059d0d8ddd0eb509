"""event-ttl: an event is deleted ttl after its last occurrence, with the resourceVersion
it was judged on; a newer occurrence (Conflict) is judged again."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from test_controllers_support import NullLog, informer_of  # type: ignore[import-not-found]

from caravanserai.api.event import Event, new_event
from caravanserai.api.problems import Conflict, NotFound
from caravanserai.informer import Controller, FakeClock, Result
from controllers.event_ttl import EventExpirer, expires_at, seconds_until_expired
from controllers.settings import load_settings

HOUR = 3600.0


class FakeEvents:
    def __init__(self) -> None:
        self.deleted: list[tuple[str, str | None]] = []
        self.errors: list[Exception] = []
        self.called = asyncio.Event()

    async def delete(self, name: str, *, resource_version: str | None = None) -> None:
        self.deleted.append((name, resource_version))
        self.called.set()
        if self.errors:
            raise self.errors.pop(0)


class FakeClient:
    def __init__(self) -> None:
        self.events = FakeEvents()


def event(clock: FakeClock, *, ago: float = 0.0, rv: str = "7", **kw: Any) -> Event:
    now = clock.now() - timedelta(seconds=ago)
    ev = new_event("Project", "web", "BackOff", "restarting", now=now)
    ev.metadata.resource_version = rv
    return ev.model_copy(update=kw)


def test_expiry_counts_from_the_last_occurrence() -> None:
    clock = FakeClock()
    ev = event(clock, ago=600)
    assert seconds_until_expired(ev, HOUR, clock) == HOUR - 600
    bumped = ev.model_copy(update={"last_timestamp": clock.now()})
    assert seconds_until_expired(bumped, HOUR, clock) == HOUR
    assert seconds_until_expired(event(clock, ago=2 * HOUR), HOUR, clock) == 0
    timeless = ev.model_copy(update={"first_timestamp": None, "last_timestamp": None})
    assert expires_at(timeless, HOUR) is None
    assert seconds_until_expired(timeless, HOUR, clock) == 0


def test_the_ttl_is_configurable_and_one_hour_by_default() -> None:
    assert load_settings("event-ttl", {}, {}).event_ttl == HOUR
    assert load_settings("event-ttl", {}, {"CARA_EVENT_TTL": "10m"}).event_ttl == 600
    assert load_settings("event-ttl", {"event_ttl": "2h"}, {}).event_ttl == 2 * HOUR


async def test_reconcile_waits_then_deletes_with_the_judged_version() -> None:
    clock = FakeClock()
    client = FakeClient()
    ev = event(clock, ago=HOUR - 30)
    expirer = EventExpirer(client, informer_of(Event, ev), clock, HOUR, NullLog())  # type: ignore[arg-type]
    assert await expirer.reconcile(ev.metadata.name) == Result(requeue_after=30.0)
    assert client.events.deleted == []
    await clock.advance(30)
    assert await expirer.reconcile(ev.metadata.name) is None
    assert client.events.deleted == [(ev.metadata.name, "7")]


async def test_a_newer_occurrence_is_judged_again_and_gone_is_fine() -> None:
    clock = FakeClock()
    client = FakeClient()
    ev = event(clock, ago=2 * HOUR)
    expirer = EventExpirer(client, informer_of(Event, ev), clock, HOUR, NullLog())  # type: ignore[arg-type]
    client.events.errors = [Conflict("stale")]
    assert await expirer.reconcile(ev.metadata.name) == Result(requeue=True)
    client.events.errors = [NotFound("gone")]
    assert await expirer.reconcile(ev.metadata.name) is None
    assert await expirer.reconcile("unknown") is None


async def test_one_timer_fires_at_the_ttl_not_before() -> None:
    clock = FakeClock()
    client = FakeClient()
    fresh = event(clock)
    expirer = EventExpirer(client, informer_of(Event, fresh), clock, HOUR, NullLog())  # type: ignore[arg-type]
    ctrl: Controller[str] = Controller("event-ttl", expirer, clock=clock)
    ctrl.enqueue(fresh.metadata.name)
    task = asyncio.create_task(ctrl.run())
    try:
        await clock.advance(HOUR - 0.1)
        assert client.events.deleted == []
        assert ctrl.queue.delayed == 1
        await clock.advance(0.1)
        async with asyncio.timeout(5):
            await client.events.called.wait()
        assert [n for n, _ in client.events.deleted] == [fresh.metadata.name]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
