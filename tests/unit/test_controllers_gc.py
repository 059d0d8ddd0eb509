"""gc: one timer per project from spec.expireAt; deletes (no force) at that time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from test_controllers_support import (  # type: ignore[import-not-found]
    FakeClient,
    NullLog,
    informer_of,
    project,
)

from caravanserai.api.project import Project, ProjectPhase
from caravanserai.informer import Controller, FakeClock, Result
from controllers.gc import GarbageCollector, seconds_until_expiry


def test_seconds_until_expiry() -> None:
    clock = FakeClock()
    now = clock.now()
    assert seconds_until_expiry(project("p"), clock) is None
    assert seconds_until_expiry(project("p", expire_at=now + timedelta(seconds=42)), clock) == 42
    assert seconds_until_expiry(project("p", expire_at=now - timedelta(days=1)), clock) == 0
    terminating = project("p", ProjectPhase.TERMINATING, "a", expire_at=now)
    assert seconds_until_expiry(terminating, clock) is None


async def test_reconcile_waits_then_deletes_without_force() -> None:
    clock = FakeClock()
    p = project("p", expire_at=clock.now() + timedelta(seconds=30))
    client = FakeClient()
    gc = GarbageCollector(client, informer_of(Project, p), clock, NullLog())  # type: ignore[arg-type]
    assert await gc.reconcile("p") == Result(requeue_after=30.0)
    assert client.calls == []
    await clock.advance(30)
    assert await gc.reconcile("p") is None
    [call] = client.calls
    assert call.method == "projects.delete" and call.kwargs == {"force": False}


async def test_the_timer_fires_at_expire_at_not_before() -> None:
    clock = FakeClock()
    client = FakeClient()
    projects = informer_of(
        Project,
        project("soon", expire_at=clock.now() + timedelta(seconds=3600)),
        project("never"),
    )
    gc = GarbageCollector(client, projects, clock, NullLog())  # type: ignore[arg-type]
    ctrl: Controller[str] = Controller("gc", gc, clock=clock)
    ctrl.enqueue("soon")
    ctrl.enqueue("never")
    task = asyncio.create_task(ctrl.run())
    try:
        await clock.advance(3599.9)
        assert client.calls == []
        assert ctrl.queue.delayed == 1  # one timer, not a poll
        await clock.advance(0.1)
        async with asyncio.timeout(5):
            await client.wait_calls(1)
        assert [c.args for c in client.calls] == [("soon",)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
