"""Taking a connection from the pool without losing a cancellation.

On Python 3.11, psycopg_pool waits for a free connection with ``asyncio.wait_for``, which
returns the connection — and drops the CancelledError — when the task is cancelled in the
same loop iteration as a connection is handed to it (CPython gh-86296, fixed in 3.12 by
reimplementing ``wait_for``). A task so cancelled goes on as if nothing happened: at
shutdown an informer whose cancel was lost waits on its watch for ever, and with it the
TaskGroup that cancelled it. ``task.cancelling()`` still counts the request, so it is
raised here, as soon as the connection is ours (and it goes straight back to the pool).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool


@contextlib.asynccontextmanager
async def pooled_connection(
    pool: AsyncConnectionPool[Any],
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """``pool.connection()``, raising a cancellation that arrived while it waited."""
    task = asyncio.current_task()
    requested = task.cancelling() if task is not None else 0
    async with pool.connection() as conn:
        if task is not None and task.cancelling() > requested:
            raise asyncio.CancelledError()
        yield conn
