"""termination and gc in a real cara-server: the delete lifecycle ends with the record
removed; a Terminating project on a dead node is forced after the timeout; gc deletes at
expireAt, exactly as `caractrl delete` would."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from test_controllers_harness import (  # type: ignore[import-not-found]
    a_project,
    eventually,
    heartbeating,
    manager_settings,
    ready_node,
    report,
    serve,
    wait_gone,
    wait_phase,
)

from caravanserai.api.base import get_condition
from caravanserai.api.project import (
    CONDITION_PHASE,
    CONDITION_TERMINATING_AT,
    Project,
    ProjectPhase,
)
from caravanserai.api.watch import EventType
from caravanserai.client.http import CaravanseraiClient
from caravanserai.informer import FakeClock
from caravanserai.store.postgres import PostgresStore
from controllers.termination import MESSAGE_TERMINATION_TIMEOUT

P = ProjectPhase


Events = list[tuple[EventType, Project, float]]


async def recording(client: CaravanseraiClient, name: str, into: Events) -> asyncio.Task[None]:
    """Start recording every later event of project ``name`` with the (loop) time it arrived;
    returns once the recording's starting revision is fixed."""
    rv = (await client.projects.list()).resource_version
    return asyncio.create_task(_record(client, name, rv, into))


async def _record(client: CaravanseraiClient, name: str, rv: str, into: Events) -> None:
    loop = asyncio.get_running_loop()
    async for event in client.projects.watch(rv):
        if event.object is not None and event.object.metadata.name == name:
            into.append((event.type, event.object, loop.time()))


async def deleted_event(events: Events) -> None:
    async def seen() -> bool:
        return bool(events) and events[-1][0] is EventType.DELETED

    await eventually(seen, within=10, what="the DELETED event")


async def test_termination_lifecycle_removes_the_record(
    store: PostgresStore, database_url: str
) -> None:
    async with serve(store, database_url, manager_settings(("scheduler", "termination"))) as server:
        c = server.client
        await ready_node(c, "a")
        await c.projects.create(a_project("web"))
        await wait_phase(c, "web", P.SCHEDULED)
        await report(c, "web", P.RUNNING, "ContainersRunning")
        terminating = await c.projects.delete("web")
        assert terminating is not None and terminating.status.phase is P.TERMINATING
        assert (await c.projects.get("web")).status.phase is P.TERMINATING
        await report(c, "web", P.TERMINATED, "ResourcesRemoved")
        await wait_gone(c, "web")


async def test_terminating_on_a_dead_node_is_forced_after_the_timeout(
    store: PostgresStore, database_url: str
) -> None:
    settings = manager_settings(
        ("scheduler", "node-health", "termination"),
        node_health={"heartbeat_timeout": 1.0},
        termination={"terminating_timeout": 1.5},
    )
    async with serve(store, database_url, settings) as server:
        c = server.client
        await ready_node(c, "a")
        events: Events = []
        recorder = await recording(c, "web", events)
        try:
            async with heartbeating(c, "a") as alive:
                await c.projects.create(a_project("web"))
                await wait_phase(c, "web", P.SCHEDULED)
                await report(c, "web", P.RUNNING, "ContainersRunning")
                await c.projects.delete("web")
                alive.discard("a")  # the node dies before its agent tore the project down
                await wait_gone(c, "web", within=20)
                await deleted_event(events)
        finally:
            recorder.cancel()
            await asyncio.gather(recorder, return_exceptions=True)

        marked = [
            (p, t)
            for _, p, t in events
            if get_condition(p.status.conditions, CONDITION_TERMINATING_AT) is not None
        ]
        assert marked, "TerminatingAt was never written"
        first, _ = marked[0]
        mark = get_condition(first.status.conditions, CONDITION_TERMINATING_AT)
        assert mark is not None and mark.reason == "NodeNotReady"
        # Written once: every later state carries the same start of the clock.
        assert {
            get_condition(p.status.conditions, CONDITION_TERMINATING_AT).last_transition_time  # type: ignore[union-attr]
            for p, _ in marked
        } == {mark.last_transition_time}
        [(forced, _)] = [
            (p, t)
            for kind, p, t in events
            if kind is EventType.MODIFIED and p.status.phase is P.TERMINATED
        ]
        phase = get_condition(forced.status.conditions, CONDITION_PHASE)
        assert phase is not None and phase.reason == "TerminationTimeout"
        assert phase.message == MESSAGE_TERMINATION_TIMEOUT
        # Forced only once the timeout ran from the mark (the server's recorded times).
        assert mark.last_transition_time is not None
        forced_time = next(h.time for h in reversed(forced.status.history)
                           if h.phase is P.TERMINATED)
        assert forced_time >= mark.last_transition_time + timedelta(seconds=1.5 - 0.05)
        assert events[-1][0] is EventType.DELETED


async def test_gc_deletes_at_expire_at(store: PostgresStore, database_url: str) -> None:
    # A fake clock: "at expireAt, not a poll later" is checked by moving time, not timing it.
    clock = FakeClock(start=datetime.now(UTC) - timedelta(seconds=1))
    async with serve(store, database_url, manager_settings(("gc",)), clock=clock) as server:
        c = server.client
        expire_at = clock.now() + timedelta(seconds=60)
        events: Events = []
        recorder = await recording(c, "temp", events)
        try:
            await c.projects.create(a_project("temp", expire_at=expire_at))
            await c.projects.create(a_project("keep"))

            async def timer_armed() -> bool:
                runnable = server.manager.controllers.get("gc")
                return runnable is not None and runnable.queue.delayed == 1  # type: ignore[attr-defined]

            await eventually(timer_armed, what="the expiry timer")
            await clock.advance(59)
            assert (await c.projects.get("temp")).status.phase is P.PENDING  # not early
            await clock.advance(2)  # past expireAt: the one timer fires, no poll needed
            await wait_gone(c, "temp", within=10)
            await deleted_event(events)
        finally:
            recorder.cancel()
            await asyncio.gather(recorder, return_exceptions=True)
        assert (await c.projects.get("keep")).status.phase is P.PENDING
        assert events[-1][0] is EventType.DELETED


async def test_gc_of_a_project_on_a_node_is_a_graceful_delete(
    store: PostgresStore, database_url: str
) -> None:
    settings = manager_settings(("scheduler", "gc", "termination"))
    async with serve(store, database_url, settings) as server:
        c = server.client
        await ready_node(c, "a")
        await c.projects.create(
            a_project("temp", expire_at=datetime.now(UTC) + timedelta(seconds=1))
        )
        await wait_phase(c, "temp", P.SCHEDULED)
        await report(c, "temp", P.RUNNING, "ContainersRunning")
        # As `caractrl delete`: Terminating, the agent tears down, then the record goes.
        p = await wait_phase(c, "temp", P.TERMINATING, within=10)
        assert p.metadata.deletion_timestamp is not None
        await report(c, "temp", P.TERMINATED, "ResourcesRemoved")
        await wait_gone(c, "temp")
