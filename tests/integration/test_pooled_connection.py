"""A task cancelled while it waits for a pooled connection ends cancelled, however the
cancel and the hand-over of a connection interleave (Python 3.11's ``asyncio.wait_for``,
which psycopg_pool waits with, drops the cancellation when both land in one iteration)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from caravanserai.store.pooled import pooled_connection


@pytest.mark.parametrize("yields", range(8))
async def test_a_cancel_that_meets_a_free_connection_is_not_lost(
    database_url: str, yields: int
) -> None:
    async with AsyncConnectionPool(database_url, min_size=1, max_size=1, open=False) as pool:
        await pool.open(wait=True)
        async def waiter() -> None:
            async with pooled_connection(pool):
                pass  # reached with a cancel pending: the cancellation was lost

        async with pooled_connection(pool):
            task = asyncio.create_task(waiter())
            for _ in range(3):
                await asyncio.sleep(0)  # the waiter is queued for the connection
        for _ in range(yields):  # the hand-over, part or all of it
            await asyncio.sleep(0)
        task.cancel()
        result: Any = await asyncio.gather(task, return_exceptions=True)
        # Either it ended cancelled, or it had finished before the cancel (which then
        # counted nothing); finishing with a cancel counted is the lost cancellation.
        assert isinstance(result[0], asyncio.CancelledError) or task.cancelling() == 0, (
            "the cancellation was lost"
        )


async def test_the_reserved_connection_does_not_queue_behind_the_pool(database_url: str) -> None:
    """The leader's lease renewal runs on the store's reserved connection: a pool taken up
    by requests does not make it wait (and lose leadership)."""
    from caravanserai.store.postgres import PostgresStore, reserved_connection

    store = await PostgresStore.open(database_url, pool_min=1, pool_max=1)
    try:
        async with store.connection():  # every pooled connection is busy
            queued = asyncio.create_task(store.list("Lease"))
            with reserved_connection():
                listed = await asyncio.wait_for(store.list("Lease"), 10)
            assert listed.items == []
            assert not queued.done()  # the ordinary call still waits for the pool
        assert (await queued).items == []
    finally:
        await store.close()
