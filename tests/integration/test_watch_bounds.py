"""The watch path under pressure: memory bounded by bytes, slow watchers ended with 410,
watches from a future revision answered, and indexed dispatch (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import aiohttp
import pytest
import server_support
from aiohttp.test_utils import TestServer
from server_support import Api, make_config, manifest, open_watch
from test_store_support import StoreFactory, collect_until, project, set_status

from caravanserai.api.problems import Expired, TooLargeResourceVersion
from caravanserai.api.selectors import Selector
from caravanserai.api.watch import EventType
from caravanserai.server.app import create_app
from caravanserai.store.hub import HubLimits
from caravanserai.store.postgres import PostgresStore

api = pytest.fixture(server_support.serve_api, name="api")

BIG = 20_000  # characters of padding per object


def padded(name: str, size: int = BIG) -> dict[str, object]:
    obj = project(name)
    obj["metadata"]["annotations"] = {"pad": "x" * size}
    return obj


# -- the hub's own bounds --------------------------------------------------------------------


async def test_ring_is_bounded_by_bytes_and_old_watchers_still_get_everything(
    store_factory: StoreFactory,
) -> None:
    limit = 150_000
    s = await store_factory(hub_limits=HubLimits(ring_bytes=limit))
    start = await s.current_revision()
    for i in range(30):
        await s.create(padded(f"p{i:02d}"))
    final = await s.current_revision()
    assert await s.hub.wait_for_revision(final, 10)
    assert s.hub.ring_bytes <= limit
    assert 0 < s.hub.ring_length < 30, "the byte bound, not the count, trimmed the ring"
    # A watcher from before the ring pages through the log: nothing lost, in order.
    async with s.watch("Project", start) as w:
        events = await collect_until(w, final)
    assert [e.name for e in events] == [f"p{i:02d}" for i in range(30)]


async def test_a_watcher_that_does_not_take_its_events_is_ended_within_its_budget(
    store: PostgresStore,
) -> None:
    budget = 100_000
    slow = store.hub.watch("Project", await store.current_revision(), max_queued_bytes=budget)
    fast = store.hub.watch("Project", await store.current_revision())
    async with slow, fast:
        assert await slow.next(timeout=0) is None  # caught up: now served by the hub
        ended_before = store.hub.slow_watchers_ended
        for i in range(12):  # 12 x ~20 kB > 100 kB
            await store.create(padded(f"s{i}"))
            assert slow.queued_bytes <= budget
        final = await store.current_revision()
        got = await collect_until(fast, final)  # an unbounded watcher is unaffected
        assert len(got) == 12
        assert store.hub.slow_watchers_ended == ended_before + 1
        assert slow.queued_bytes == 0  # what it held was let go
        with pytest.raises(Expired, match="too far behind"):
            await slow.next(timeout=1)


async def test_a_watch_from_a_future_revision_waits_briefly_then_fails(
    store_factory: StoreFactory,
) -> None:
    s = await store_factory(hub_limits=HubLimits(future_wait=0.2))
    head = await s.current_revision()
    with pytest.raises(TooLargeResourceVersion, match="ahead of this server"):
        async with s.watch("Project", head + 1000):
            pass
    # One that the server reaches while waiting is served normally.
    s2 = await store_factory(hub_limits=HubLimits(future_wait=30))
    w = s2.watch("Project", head + 1)

    async def create_two() -> None:
        await s.create(project("f1"))
        await s.create(project("f2"))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(create_two())
        await w.start()
    async with w:
        events = await collect_until(w, head + 2)
    assert [e.name for e in events] == ["f2"]


async def test_node_scoped_watchers_get_moves_as_added_and_deleted(store: PostgresStore) -> None:
    rev = await store.current_revision()
    watches = {
        n: store.watch("Project", rev, Selector.parse(field_selector=f"status.nodeRef={n}"))
        for n in ("a", "b", "c")
    }
    by_name = store.watch("Project", rev, Selector.parse(field_selector="metadata.name=p"))
    for w in (*watches.values(), by_name):
        await w.start()
        assert await w.next(timeout=0) is None  # live
    offers_before = store.hub.offers
    await store.create(project("p"))
    await store.update("Project", "p", set_status(nodeRef="a"))
    await store.update("Project", "p", set_status(nodeRef="b"))
    await store.create(project("q"))
    await store.update("Project", "q", set_status(nodeRef="b"))
    await store.delete("Project", "p")
    final = await store.current_revision()
    seen = {n: [(str(e.type), e.name) for e in await collect_until(w, final)]
            for n, w in watches.items()}
    assert seen["a"] == [("ADDED", "p"), ("DELETED", "p")]
    assert seen["b"] == [("ADDED", "p"), ("ADDED", "q"), ("DELETED", "p")]
    assert seen["c"] == []
    assert [str(e.type) for e in await collect_until(by_name, final)] == [
        "ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    # Each event was evaluated only for the watchers of its old and new value.
    assert store.hub.offers - offers_before <= 2 * 6
    for w in (*watches.values(), by_name):
        await w.aclose()


async def test_indexed_dispatch_does_not_grow_with_unrelated_watchers(
    store: PostgresStore,
) -> None:
    rev = await store.current_revision()
    watchers = [
        store.watch("Project", rev, Selector.parse(any_of={"status.nodeRef": {f"n{i}"}}))
        for i in range(200)
    ]
    for w in watchers:
        await w.start()
        assert await w.next(timeout=0) is None
    before = store.hub.offers
    await store.create(project("x"))
    for i in range(5):
        await store.update("Project", "x", set_status(nodeRef=f"n{i}", phase="Scheduled"))
    final = await store.current_revision()
    assert await store.hub.wait_for_revision(final, 10)
    assert store.hub.offers - before <= 2 * 6  # not 200 per event
    assert [str(e.type) for e in await collect_until(watchers[4], final)] == ["ADDED"]
    assert [str(e.type) for e in await collect_until(watchers[0], final)] == [
        "ADDED", "DELETED"]
    for w in watchers:
        await w.aclose()


# -- over HTTP -------------------------------------------------------------------------------


async def _metric(api: Api, name: str) -> float:
    _status, text, _ = await api.call("GET", "/metrics")
    m = re.search(rf'^{name}{{kind="Project"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_a_client_that_stops_reading_is_ended_with_410(
    store: PostgresStore, database_url: str
) -> None:
    config = make_config(database_url, watch_queue_bytes=64 * 1024)
    server = TestServer(create_app(config, store), host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession()
    api = Api(server, session, store, config)
    try:
        # A raw client with a tiny receive buffer that reads nothing after the headers.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        rev = await store.current_revision()
        writer.write(
            f"GET /api/v1/projects?watch=true&resourceVersion={rev} HTTP/1.1\r\n"
            f"Host: {server.host}\r\n\r\n".encode()  # keep-alive: the server closes
        )
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        pad = "y" * 60_000
        written = 0
        async with asyncio.timeout(120):
            while await _metric(api, "cara_watch_slow_terminated_total") < 1:
                body = manifest(f"big-{written:03d}")
                body["metadata"]["annotations"] = {"pad": pad}
                status, _, _ = await api.call("POST", "/api/v1/projects", body)
                assert status == 201
                written += 1
                assert written < 1000, "the slow watcher was never ended"
        # The client reads at last: what was queued, then the 410 ERROR, then the end (the
        # server closes the connection of a watcher it ended for being slow).
        async with asyncio.timeout(30):
            data = await reader.read()
        writer.close()
        lines = [line for line in data.split(b"\n") if line.startswith(b'{"type"')]
        last = json.loads(lines[-1])
        assert last["type"] == "ERROR" and last["object"]["status"] == 410
        assert "too far behind" in last["object"]["detail"]
        assert len(lines) - 1 < written, "not every event was queued for it"
        assert data.endswith(b"0\r\n\r\n")  # a clean end of the chunked stream
        # And the server let go of the stream (the handler may sit out its 10 s grace for
        # a client that does not read before it notices the connection is gone).
        async with asyncio.timeout(30):
            while True:
                if await _metric(api, "cara_watches_open") == 0:
                    break
                await asyncio.sleep(0.05)
    finally:
        await session.close()
        await server.close()


async def test_a_watch_from_a_future_revision_is_a_504_with_retry_after(
    store: PostgresStore, database_url: str
) -> None:
    config = make_config(database_url, watch_future_wait=0.2)
    server = TestServer(create_app(config, store), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        api = Api(server, session, store, config)
        future = await store.current_revision() + 100_000
        status, problem, resp = await api.call(
            "GET", "/api/v1/projects", params={"watch": "true", "resourceVersion": str(future)}
        )
        assert status == 504
        assert resp.headers["Retry-After"] == "1"
        assert problem["type"].endswith("/too-large-resource-version")
        assert str(future) in problem["detail"]
        # And a revision the server has: streams as usual.
        stream = await open_watch(api, "projects",
                                  resourceVersion=str(await store.current_revision()))
        try:
            await api.create_project("now")
            assert [e["type"] for e in await stream.take(1)] == [str(EventType.ADDED)]
        finally:
            await stream.close()
    await server.close()
