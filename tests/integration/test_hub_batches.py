"""A watcher takes everything pending in one call (``next_batch``), waits are bounded by
their own deadline whatever came before, and a paced hub (``read_linger``) still delivers
every event once, in order (real PostgreSQL)."""

from __future__ import annotations

import asyncio

from test_store_support import StoreFactory, collect_until, project

from caravanserai.store.hub import HubLimits
from caravanserai.store.postgres import PostgresStore


async def test_one_call_takes_every_pending_event_in_order(store: PostgresStore) -> None:
    loop = asyncio.get_running_loop()
    async with store.watch("Project", await store.current_revision()) as w:
        assert await w.next_batch(loop.time()) == []  # caught up, nothing yet
        for i in range(5):
            await store.create(project(f"b{i}"))
        final = await store.current_revision()
        assert await store.hub.wait_for_revision(final, 10)
        # The hub has handed all five over: one call returns them, bounded by max_events.
        first = await w.next_batch(None, max_events=2)
        rest = await w.next_batch(None)
        assert [e.name for e in first] == ["b0", "b1"]
        assert [e.name for e in rest] == ["b2", "b3", "b4"]
        assert w.revision == final
        assert await w.next_batch(loop.time()) == []


async def test_a_short_wait_after_a_long_one_ends_at_its_own_deadline(
    store: PostgresStore,
) -> None:
    loop = asyncio.get_running_loop()
    async with store.watch("Project", await store.current_revision()) as w:
        long_wait = asyncio.create_task(w.next_batch(loop.time() + 3600))
        await asyncio.sleep(0)  # it is waiting now
        long_wait.cancel()
        async with asyncio.timeout(30):  # a failure here would hang for the hour
            assert await w.next_batch(loop.time() + 0.05) == []
        assert await w.next(timeout=0.01) is None


async def test_a_cancelled_wait_loses_nothing(store: PostgresStore) -> None:
    async with store.watch("Project", await store.current_revision()) as w:
        waiting = asyncio.create_task(w.next_batch(None))
        await asyncio.sleep(0)
        waiting.cancel()
        await store.create(project("kept"))
        async with asyncio.timeout(20):
            got = await w.next_batch(None)
        assert [e.name for e in got] == ["kept"]


async def test_a_paced_hub_delivers_every_event_once_in_order(
    store_factory: StoreFactory,
) -> None:
    s = await store_factory(hub_limits=HubLimits(read_linger=0.05))
    start = await s.current_revision()
    async with s.watch("Project", start) as w:
        await w.next_batch(asyncio.get_running_loop().time())  # live from here on
        await asyncio.gather(*(s.create(project(f"p{i:02d}")) for i in range(30)))
        final = await s.current_revision()
        events = await collect_until(w, final)
    assert sorted(e.name for e in events) == [f"p{i:02d}" for i in range(30)]
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))
