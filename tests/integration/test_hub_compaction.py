"""A watch hub cut off from PostgreSQL while the log is compacted past it: its watchers get
410 Gone (Expired), never a silent gap.

The cut is real: the hub's process reaches PostgreSQL through a TCP proxy on 127.0.0.1
that the test severs (every connection closed, new ones refused) and later restores.
Meanwhile another process writes and compacts. Catches: the hub's gap check removed (its
watchers would jump over the compacted events) or the log fallback not raising Expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestServer
from server_support import make_config
from test_store_support import project

from caravanserai.api.problems import Expired
from caravanserai.server.app import create_app
from caravanserai.store.postgres import PostgresStore

StoreFactory = Callable[..., Awaitable[PostgresStore]]


class Proxy:
    """A TCP proxy to PostgreSQL that can be cut (connections closed, new ones refused)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cut = False
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.links.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self.links.difference_update((writer, up_writer))

    def sever(self) -> None:
        self.cut = True
        for w in list(self.links):
            w.close()

    def restore(self) -> None:
        self.cut = False

    async def close(self) -> None:
        self.sever()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[Proxy]:
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    p = Proxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    await p.start()
    try:
        yield p
    finally:
        await p.close()


def through(proxy: Proxy, database_url: str) -> str:
    assert proxy.server is not None
    port = proxy.server.sockets[0].getsockname()[1]
    return psycopg.conninfo.make_conninfo(database_url, host="127.0.0.1", port=port)


async def test_hub_behind_compaction_after_a_disconnect_gives_410(
    store: PostgresStore, proxy: Proxy, database_url: str, notify_only_poll: float
) -> None:
    cut_off = await PostgresStore.open(
        through(proxy, database_url), pool_min=1, pool_max=4, poll_interval=notify_only_poll,
        connect_timeout=2.0,
    )
    server = TestServer(create_app(make_config(database_url), cut_off), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            first = await store.create(project("first"))
            start = int(first["metadata"]["resourceVersion"])
            watch = cut_off.watch("Project", start)
            await watch.start()
            resp = await http.get(
                str(server.make_url("/api/v1/projects")),
                params={"watch": "true", "resourceVersion": str(start)},
                timeout=aiohttp.ClientTimeout(total=None),
            )
            assert resp.status == 200
            # Connected: a write reaches both the store watch and the HTTP stream.
            await store.create(project("seen"))
            ev = await watch.next(timeout=10)
            assert ev is not None and ev.name == "seen"
            line = await asyncio.wait_for(resp.content.readline(), 10)
            assert json.loads(line)["object"]["metadata"]["name"] == "seen"

            proxy.sever()  # the hub (and its pool) lose PostgreSQL
            for i in range(20):
                await store.create(project(f"while-away-{i}"))
            await store.compact(max_events=3)
            assert await store.compacted_revision() > start + 1
            proxy.restore()

            # The hub reconnects, finds the gap, and its watchers are told: 410 / Expired.
            with pytest.raises(Expired):
                async with asyncio.timeout(30):
                    while True:
                        ev = await watch.next(timeout=1)
                        assert ev is None, f"got {ev.name} across a compacted gap"
            async with asyncio.timeout(30):
                while True:
                    line = await resp.content.readline()
                    assert line, "the stream ended without an ERROR event"
                    event = json.loads(line)
                    if event["type"] == "BOOKMARK":
                        continue
                    assert event["type"] == "ERROR", f"got {event} across a compacted gap"
                    assert event["object"]["status"] == 410, event
                    break
            resp.close()
            await watch.aclose()
            # A fresh list and watch from now on work again through the same hub.
            listed = await cut_off.list("Project")
            assert len(listed.items) == 22
    finally:
        await server.close()
        await cut_off.close()
