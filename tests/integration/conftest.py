"""Fixtures for the store's integration tests (helpers live in test_store_support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from caravanserai.store.postgres import PostgresStore


@pytest.fixture
async def store_factory(
    database_url: str, notify_only_poll: float
) -> AsyncIterator[Callable[..., Awaitable[PostgresStore]]]:
    """Open more PostgresStores on this test's database (other "processes"); all closed after."""
    opened: list[PostgresStore] = []

    async def factory(**kwargs: Any) -> PostgresStore:
        kwargs.setdefault("pool_min", 1)
        kwargs.setdefault("pool_max", 10)
        kwargs.setdefault("poll_interval", notify_only_poll)
        s = await PostgresStore.open(database_url, **kwargs)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        await s.close()
