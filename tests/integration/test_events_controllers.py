"""Events written and expired by the controllers of a real cara-server (real PostgreSQL):
the scheduler's Scheduled / FailedScheduling, the event-ttl controller's expiry on the fake
clock (not a poll later, and a newer occurrence keeps the event)."""

from __future__ import annotations

from datetime import UTC, datetime

from test_controllers_harness import (  # type: ignore[import-not-found]
    a_project,
    eventually,
    manager_settings,
    ready_node,
    serve,
)

from caravanserai.api.event import Event, EventKind, new_event
from caravanserai.api.problems import NotFound
from caravanserai.client.http import CaravanseraiClient
from caravanserai.informer import FakeClock
from caravanserai.store.postgres import PostgresStore


async def events_of(c: CaravanseraiClient, name: str) -> dict[str, Event]:
    listed = await c.events.list(field_selector=f"involvedObject.name={name}")
    return {e.reason: e for e in listed.items}


async def test_the_scheduler_reports_failed_scheduling_then_scheduled(
    store: PostgresStore, database_url: str
) -> None:
    async with serve(store, database_url, manager_settings(("scheduler",))) as server:
        c = server.client
        await c.projects.create(a_project("web"))

        async def failed() -> Event | None:
            return (await events_of(c, "web")).get("FailedScheduling")

        ev = await eventually(failed, what="a FailedScheduling event")
        assert ev.type is EventKind.WARNING
        assert ev.message.startswith("0/0 nodes")
        assert ev.reporting_component == "scheduler"
        assert ev.involved_object.kind == "Project"

        await ready_node(c, "n1")

        async def scheduled() -> Event | None:
            return (await events_of(c, "web")).get("Scheduled")

        ev = await eventually(scheduled, what="a Scheduled event")
        assert ev.type is EventKind.NORMAL
        assert ev.message == "Successfully assigned web to n1"


async def test_event_ttl_deletes_an_hour_after_the_last_occurrence(
    store: PostgresStore, database_url: str
) -> None:
    clock = FakeClock(start=datetime.now(UTC))
    settings = manager_settings(("event-ttl",))
    async with serve(store, database_url, settings, clock=clock) as server:
        c = server.client
        old = new_event("Project", "a", "Pulled", "pulled", now=clock.now())
        kept = new_event("Project", "b", "BackOff", "restarting", now=clock.now())
        await c.events.record(old)
        await c.events.record(kept)

        async def timers_armed() -> bool:
            runnable = server.manager.controllers.get("event-ttl")
            return runnable is not None and runnable.queue.delayed == 2  # type: ignore[attr-defined]

        await eventually(timers_armed, what="two expiry timers")
        await clock.advance(1800)
        # Half an hour later "b" happens again: its hour starts over.
        await c.events.record(kept.model_copy(update={"last_timestamp": clock.now()}))
        assert (await c.events.get(kept.metadata.name)).count == 2
        await clock.advance(1799)
        await c.events.get(old.metadata.name)  # not early

        await clock.advance(2)

        async def expired() -> bool:
            try:
                await c.events.get(old.metadata.name)
            except NotFound:
                return True
            return False

        await eventually(expired, what="the expired event deleted")
        assert (await c.events.get(kept.metadata.name)).count == 2
        await clock.advance(1800)

        async def kept_expired() -> bool:
            return not (await c.events.list()).items

        await eventually(kept_expired, what="the re-armed event deleted")
