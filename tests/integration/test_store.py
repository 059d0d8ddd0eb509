"""PostgresStore against a real PostgreSQL: CRUD, revisions, list, watch, compaction."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable
from typing import NoReturn

import psycopg
import pytest
from test_store_support import (
    StoreFactory,
    collect_n,
    collect_until,
    keyed,
    kill_listeners,
    node,
    project,
    replay,
    set_status,
    with_dbname,
)

from caravanserai.api.problems import AlreadyExists, Conflict, Expired, NotFound, Unavailable
from caravanserai.api.selectors import Selector
from caravanserai.api.watch import EventType
from caravanserai.store.postgres import PostgresStore
from caravanserai.store.types import Obj

# -- CRUD -----------------------------------------------------------------------------------


async def test_create_sets_server_fields(store: PostgresStore) -> None:
    obj = project("web")
    obj["metadata"]["resourceVersion"] = "999"  # ignored on create
    obj["metadata"]["uid"] = "not-a-uid"
    created = await store.create(obj)
    md = created["metadata"]
    assert md["resourceVersion"] == "1"
    assert md["generation"] == 1
    assert uuid.UUID(md["uid"])
    assert md["creationTimestamp"].endswith("Z")
    assert obj["metadata"]["resourceVersion"] == "999", "the caller's dict is not modified"
    assert await store.get("Project", "web") == created
    assert await store.current_revision() == 1


async def test_create_existing_is_409(store: PostgresStore) -> None:
    await store.create(project("web"))
    with pytest.raises(AlreadyExists):
        await store.create(project("web"))
    # the failed create took no revision
    assert await store.current_revision() == 1
    # same name, other kind is fine
    await store.create(node("web"))
    assert await store.current_revision() == 2


async def test_missing_objects_are_404(store: PostgresStore) -> None:
    with pytest.raises(NotFound):
        await store.get("Project", "nope")
    with pytest.raises(NotFound):
        await store.update("Project", "nope", lambda o: o)
    with pytest.raises(NotFound):
        await store.delete("Project", "nope")


async def test_stale_resource_version_is_409(store: PostgresStore) -> None:
    created = await store.create(project("web"))
    rv = created["metadata"]["resourceVersion"]
    updated = await store.update("Project", "web", set_status(phase="Pending"),
                                 resource_version=rv)
    assert updated["metadata"]["resourceVersion"] == "2"
    with pytest.raises(Conflict):
        await store.update("Project", "web", set_status(phase="Running"), resource_version=rv)
    with pytest.raises(Conflict):
        await store.delete("Project", "web", resource_version=rv)
    assert await store.get("Project", "web") == updated
    deleted = await store.delete("Project", "web", resource_version="2")
    assert deleted["metadata"]["resourceVersion"] == "3"


async def test_generation_bumps_only_on_spec_change(store: PostgresStore) -> None:
    await store.create(project("web"))

    def change_spec(o: Obj) -> Obj:
        o["spec"]["services"][0]["image"] = "busybox:2"
        return o

    after_status = await store.update("Project", "web", set_status(phase="Pending"))
    assert after_status["metadata"]["generation"] == 1
    after_spec = await store.update("Project", "web", change_spec)
    assert after_spec["metadata"]["generation"] == 2
    after_labels = await store.update(
        "Project", "web", lambda o: {**o, "metadata": {**o["metadata"], "labels": {"a": "b"}}}
    )
    assert after_labels["metadata"]["generation"] == 2
    assert after_labels["metadata"]["labels"] == {"a": "b"}


async def test_status_only_mutation_keeps_spec(store: PostgresStore) -> None:
    created = await store.create(project("web", replicas=1))
    updated = await store.update("Project", "web", set_status(phase="Running", nodeRef="n1"))
    assert updated["spec"] == created["spec"]
    assert updated["status"] == {"phase": "Running", "nodeRef": "n1"}
    assert await store.get("Project", "web") == updated


async def test_immutable_metadata_survives_mutators(store: PostgresStore) -> None:
    created = await store.create(project("web"))

    def vandal(o: Obj) -> Obj:
        o["metadata"].update(uid="x", creationTimestamp="1970-01-01T00:00:00Z", name="other",
                             generation=42, resourceVersion="1000")
        o["status"] = {"phase": "Pending"}
        return o

    updated = await store.update("Project", "web", vandal)
    for key in ("uid", "creationTimestamp", "name"):
        assert updated["metadata"][key] == created["metadata"][key]
    assert updated["metadata"]["generation"] == 1
    assert updated["metadata"]["resourceVersion"] == "2"


async def test_noop_mutation_writes_nothing(store: PostgresStore) -> None:
    created = await store.create(project("web"))
    assert await store.update("Project", "web", lambda o: None) == created
    assert await store.update("Project", "web", lambda o: o) == created
    assert await store.current_revision() == 1


async def test_mutator_error_rolls_back(store: PostgresStore) -> None:
    await store.create(project("web"))

    def refuse(o: Obj) -> Obj:
        o["status"] = {"phase": "Running"}
        raise Conflict("Terminating cannot become Running")

    with pytest.raises(Conflict, match="Terminating"):
        await store.update("Project", "web", refuse)
    assert "status" not in await store.get("Project", "web")
    assert await store.current_revision() == 1
    # the connection went back to the pool clean: writes still work
    await store.update("Project", "web", set_status(phase="Pending"))
    assert await store.current_revision() == 2


async def test_delete_precondition_and_result(store: PostgresStore) -> None:
    await store.create(project("web"))

    def must_be_terminated(o: Obj) -> None:
        if (o.get("status") or {}).get("phase") != "Terminated":
            raise Conflict("not terminated yet")

    with pytest.raises(Conflict):
        await store.delete("Project", "web", precondition=must_be_terminated)
    await store.update("Project", "web", set_status(phase="Terminated"))
    deleted = await store.delete("Project", "web", precondition=must_be_terminated)
    assert deleted["status"]["phase"] == "Terminated"
    assert deleted["metadata"]["resourceVersion"] == "3"
    with pytest.raises(NotFound):
        await store.get("Project", "web")
    # a recreated object is a new object
    again = await store.create(project("web"))
    assert again["metadata"]["uid"] != deleted["metadata"]["uid"]


async def test_concurrent_updates_serialise(store: PostgresStore) -> None:
    await store.create(project("counter", count=0))

    def incr(o: Obj) -> Obj:
        o["spec"]["count"] += 1
        return o

    await asyncio.gather(*(store.update("Project", "counter", incr) for _ in range(40)))
    final = await store.get("Project", "counter")
    assert final["spec"]["count"] == 40
    assert final["metadata"]["generation"] == 41
    assert final["metadata"]["resourceVersion"] == "41"


async def test_updates_from_two_processes_lose_nothing(store_factory: StoreFactory) -> None:
    # Each store starts updates from the copy it wrote last; the other store's writes make
    # that copy stale, which must cost a retry, never an update.
    a = await store_factory()
    b = await store_factory()
    await a.create(project("counter", count=0))

    def incr(o: Obj) -> Obj:
        o["spec"]["count"] += 1
        return o

    async def bump(s: PostgresStore) -> None:
        for _ in range(25):
            await s.update("Project", "counter", incr)

    await asyncio.gather(bump(a), bump(b), bump(a), bump(b))
    assert (await a.get("Project", "counter"))["spec"]["count"] == 100


async def test_stale_copy_never_decides(store_factory: StoreFactory) -> None:
    a = await store_factory()
    b = await store_factory()
    await a.create(project("web"))
    await a.update("Project", "web", set_status(phase="Running"))  # a remembers "Running"
    await b.update("Project", "web", set_status(phase="Pending"))

    def ensure_running(o: Obj) -> Obj | None:
        if o["status"]["phase"] == "Running":
            return None  # nothing to do (true only of a's stale copy)
        o["status"]["phase"] = "Running"
        return o

    result = await a.update("Project", "web", ensure_running)
    assert result["status"]["phase"] == "Running"
    assert (await b.get("Project", "web"))["status"]["phase"] == "Running"

    def refuse_pending(o: Obj) -> Obj:
        if o["status"]["phase"] != "Pending":
            raise Conflict("only from Pending")
        o["status"]["phase"] = "Scheduled"
        return o

    await b.update("Project", "web", set_status(phase="Pending"))
    # a's copy says Running (refused), the database says Pending (allowed)
    assert (await a.update("Project", "web", refuse_pending))["status"]["phase"] == "Scheduled"


# -- list -----------------------------------------------------------------------------------


async def test_list_sorted_with_revision(store: PostgresStore) -> None:
    names = ["b", "a", "c-1", "c", "a0"]
    for n in names:
        await store.create(project(n))
    await store.create(node("n1"))
    result = await store.list("Project")
    assert [o["metadata"]["name"] for o in result.items] == sorted(names)
    assert result.revision == 6
    assert result.continue_token is None
    assert [o["metadata"]["name"] for o in (await store.list("Node")).items] == ["n1"]


@pytest.mark.parametrize(
    ("label_selector", "field_selector", "any_of"),
    [
        ("tier=web", None, None),
        ("tier in (web,db)", None, None),
        ("tier!=web", None, None),
        ("tier", None, None),
        ("!tier", None, None),
        ("tier notin (db)", None, None),
        (None, "status.phase=Running", None),
        (None, "status.phase!=Running", None),
        (None, "status.nodeRef=n1", None),
        (None, "status.nodeRef=", None),
        (None, "metadata.name=p3", None),
        (None, None, {"status.phase": {"Running", "Failed"}}),
        ("tier=web", "status.nodeRef=n1,status.phase=Running", None),
    ],
)
async def test_list_selectors_match_python(
    store: PostgresStore, label_selector: str | None, field_selector: str | None,
    any_of: dict[str, set[str]] | None,
) -> None:
    rng = random.Random(7)
    for i in range(30):
        tier = rng.choice(["web", "db", None])
        await store.create(project(f"p{i}", labels={"tier": tier} if tier else None))
        phase = rng.choice(["Pending", "Running", "Failed", None])
        if phase:
            await store.update("Project", f"p{i}",
                               set_status(phase=phase, nodeRef=rng.choice(["n1", "n2"])))
    sel = Selector.parse(label_selector, field_selector, any_of)
    everything = (await store.list("Project")).items
    expected = [o for o in everything if sel.matches(o)]
    assert (await store.list("Project", sel)).items == expected
    # paginated too
    got, token = [], None
    while True:
        page = await store.list("Project", sel, limit=4, continue_token=token)
        got += page.items
        token = page.continue_token
        if token is None:
            break
    assert got == expected


async def test_node_state_selector(store: PostgresStore) -> None:
    await store.create(node("a", "Ready"))
    await store.create(node("b", "NotReady"))
    await store.create(node("c"))
    ready = await store.list("Node", Selector.parse(field_selector="status.state=Ready"))
    assert [o["metadata"]["name"] for o in ready.items] == ["a"]
    # Nodes have no status.phase: it selects as "" (never as their state); the store agrees
    # with Selector.matches whatever it says about a missing status
    sel = Selector.parse(field_selector="status.phase=")
    no_phase = await store.list("Node", sel)
    assert {"a", "b"} <= {o["metadata"]["name"] for o in no_phase.items}
    assert no_phase.items == [o for o in (await store.list("Node")).items if sel.matches(o)]


async def test_pagination_is_consistent_under_concurrent_writes(store: PostgresStore) -> None:
    for i in range(60):
        await store.create(project(f"p{i:02d}", labels={"half": str(i % 2)}))
    sel = Selector.parse("half=0")
    full = await store.list("Project")
    full_sel = await store.list("Project", sel)
    first = await store.list("Project", limit=7)
    first_sel = await store.list("Project", sel, limit=5)
    assert first.revision == full.revision == first_sel.revision
    stop = asyncio.Event()
    writes = [0]
    wrote = asyncio.Event()  # set after each churn write

    async def churn_between_pages(at_least: int = 3) -> None:
        """Wait (a condition, not a sleep) until the churners committed more writes."""
        target = writes[0] + at_least
        async with asyncio.timeout(20):
            while writes[0] < target:
                wrote.clear()
                await wrote.wait()

    async def churn() -> None:
        rng = random.Random(1)
        n = 100
        while not stop.is_set():
            name = f"p{rng.randrange(70):02d}"
            op = rng.random()
            try:
                if op < 0.3:
                    await store.delete("Project", name)
                elif op < 0.6:
                    await store.create(project(name, labels={"half": str(rng.randrange(2))}))
                else:
                    def relabel(o: Obj, half: str = str(n % 2)) -> Obj:
                        o["metadata"]["labels"] = {"half": half}
                        o["status"] = {"phase": "Running"}
                        return o

                    await store.update("Project", name, relabel)
            except (NotFound, AlreadyExists):
                pass
            else:
                writes[0] += 1
                wrote.set()
            n += 1

    churners = [asyncio.create_task(churn()) for _ in range(4)]
    try:
        for first_page, expected in ((first, full), (first_sel, full_sel)):
            items, page = list(first_page.items), first_page
            while page.continue_token:
                await churn_between_pages()  # things change between pages
                page = await store.list("Project", sel if expected is full_sel else None,
                                        limit=7, continue_token=page.continue_token)
                assert page.revision == expected.revision
                items += page.items
            assert items == expected.items
    finally:
        stop.set()
        await asyncio.gather(*churners)
    assert await store.current_revision() > full.revision + 20, "the churn really happened"


async def test_continue_token_expires_after_compaction(store: PostgresStore) -> None:
    for i in range(10):
        await store.create(project(f"p{i}"))
    page = await store.list("Project", limit=3)
    assert page.continue_token
    await store.update("Project", "p5", set_status(phase="Running"))
    await store.compact(max_events=0)
    with pytest.raises(Expired):
        await store.list("Project", limit=3, continue_token=page.continue_token)


# -- watch ----------------------------------------------------------------------------------


async def test_list_then_watch_sees_every_later_write_once(store: PostgresStore) -> None:
    for i in range(5):
        await store.create(project(f"p{i}"))
    listed = await store.list("Project")
    async with store.watch("Project", listed.revision) as w:
        await store.create(project("p9"))
        await store.update("Project", "p1", set_status(phase="Pending"))
        await store.delete("Project", "p2")
        await store.create(node("n1"))  # another kind: not delivered, but served
        final = await store.current_revision()
        events = await collect_until(w, final)
        assert w.revision == final
        assert await w.next(timeout=0.1) is None
    assert [(e.type, e.name) for e in events] == [
        (EventType.ADDED, "p9"), (EventType.MODIFIED, "p1"), (EventType.DELETED, "p2")]
    assert [e.revision for e in events] == [6, 7, 8]
    for e in events:
        assert e.object["metadata"]["resourceVersion"] == str(e.revision)
    cache = replay(events, keyed(listed.items))
    assert cache == keyed((await store.list("Project")).items)


async def test_watch_all_kinds_and_old_object(store: PostgresStore) -> None:
    async with store.watch(None, 0) as w:
        p = await store.create(project("p"))
        n = await store.create(node("n"))
        p2 = await store.update("Project", "p", set_status(phase="Pending"))
        events = await collect_n(w, 3)
    assert [(e.kind, e.type) for e in events] == [
        ("Project", EventType.ADDED), ("Node", EventType.ADDED), ("Project", EventType.MODIFIED)]
    assert events[0].object == p and events[0].old_object is None
    assert events[1].object == n
    assert events[2].object == p2 and events[2].old_object == p


async def test_watch_selector_transitions(store: PostgresStore) -> None:
    sel = Selector.parse(field_selector="status.nodeRef=n1")
    await store.create(project("a"))
    async with store.watch("Project", await store.current_revision(), sel) as w:
        await store.update("Project", "a", set_status(nodeRef="n2"))  # not matching: nothing
        await store.update("Project", "a", set_status(nodeRef="n1"))  # starts matching
        await store.update("Project", "a", set_status(phase="Running"))  # still matching
        await store.update("Project", "a", set_status(nodeRef="n3"))  # stops matching
        await store.update("Project", "a", set_status(nodeRef="n1"))  # again
        await store.delete("Project", "a")
        await store.create(project("b"))  # never matches
        final = await store.current_revision()
        events = await collect_until(w, final)
    assert [e.type for e in events] == [
        EventType.ADDED, EventType.MODIFIED, EventType.DELETED, EventType.ADDED,
        EventType.DELETED]
    assert events[2].object["status"]["nodeRef"] == "n3"  # the state that stopped matching
    assert w.revision == final


async def test_watch_revision_advances_on_other_kinds(store: PostgresStore) -> None:
    async with store.watch("Project", 0) as w:
        for i in range(3):
            await store.create(node(f"n{i}"))
        async with asyncio.timeout(5):
            while w.revision < 3:
                assert await w.next(timeout=0.02) is None
    assert w.revision == 3


async def test_watch_from_old_revision_reads_the_log(store_factory: StoreFactory) -> None:
    # A tiny ring forces watchers that start far back to page through the log.
    s = await store_factory(ring_size=5)
    for i in range(40):
        await s.create(project(f"p{i}"))
    async with s.watch("Project", 3) as w:
        events = await collect_until(w, 40)
    assert [e.revision for e in events] == list(range(4, 41))
    # and a live watcher that falls behind the ring catches up through the log too
    async with s.watch("Project", 40) as w2:
        for i in range(30):
            await s.update("Project", f"p{i}", set_status(phase="Pending"))
        await asyncio.sleep(0)
        events = await collect_until(w2, 70)
    assert [e.revision for e in events] == list(range(41, 71))


async def test_watch_expired_after_compaction(store: PostgresStore) -> None:
    for i in range(10):
        await store.create(project(f"p{i}"))
    assert await store.compact(max_events=4) == 6
    assert await store.compacted_revision() == 6
    with pytest.raises(Expired):
        async with store.watch("Project", 5):
            pass
    with pytest.raises(Expired):
        await store.watch("Project", 2).next(timeout=0.1)
    async with store.watch("Project", 6) as w:  # at the horizon: fine
        events = await collect_until(w, 10)
    assert [e.revision for e in events] == [7, 8, 9, 10]
    # compacting to an older horizon never goes back
    assert await store.compact(max_events=100) == 6


async def test_compaction_by_age(store: PostgresStore) -> None:
    from datetime import timedelta

    for i in range(5):
        await store.create(project(f"p{i}"))
    assert await store.compact(max_age=timedelta(hours=1)) == 0
    await asyncio.sleep(0.05)
    assert await store.compact(max_age=timedelta(milliseconds=10)) == 5
    with pytest.raises(Expired):
        await store.watch("Project", 0).start()


async def test_watch_next_is_cancellation_safe(store: PostgresStore) -> None:
    async with store.watch("Project", 0) as w:
        got: list[int] = []

        async def writer() -> None:
            for i in range(50):
                await store.create(project(f"p{i}"))

        task = asyncio.create_task(writer())
        async with asyncio.timeout(20):
            while len(got) < 50:
                # Cancel many next() calls at random moments; nothing may be lost.
                try:
                    async with asyncio.timeout(random.choice([0, 0.0005, 0.002])):
                        ev = await w.next()
                except TimeoutError:
                    continue
                if ev is not None:
                    got.append(ev.revision)
        await task
    assert got == list(range(1, 51))


async def test_watch_iteration_and_close(store: PostgresStore) -> None:
    w = store.watch("Project", 0)
    await store.create(project("a"))
    async for ev in w:
        assert ev.name == "a"
        break
    await w.aclose()
    with pytest.raises(Unavailable):
        await w.next(timeout=0.1)


async def test_two_stores_on_one_database(store_factory: StoreFactory) -> None:
    a = await store_factory()
    b = await store_factory()
    async with b.watch("Project", await b.current_revision()) as w:
        created = await a.create(project("x"))
        (ev,) = await collect_n(w, 1)
    assert ev.object == created
    # and the other way round, with writes interleaved from both
    async with a.watch("Project", await a.current_revision()) as wa:
        await b.update("Project", "x", set_status(phase="Pending"))
        await a.update("Project", "x", set_status(phase="Scheduled"))
        events = await collect_n(wa, 2)
    assert [e.object["status"]["phase"] for e in events] == ["Pending", "Scheduled"]


async def test_schema_applied_concurrently(pg_admin_url: str) -> None:
    name = f"test_schema_{uuid.uuid4().hex}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        dsn = with_dbname(pg_admin_url, name)
        stores = await asyncio.gather(
            *(PostgresStore.open(dsn, pool_min=1, pool_max=2) for _ in range(4))
        )
        try:
            await stores[0].create(project("x"))
            assert (await stores[3].get("Project", "x"))["metadata"]["resourceVersion"] == "1"
        finally:
            for s in stores:
                await s.close()
        # and once more on an existing schema
        async with await PostgresStore.open(dsn, pool_min=1, pool_max=2) as again:
            assert await again.current_revision() == 1
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_watch_survives_listener_termination(store: PostgresStore) -> None:
    async with store.watch("Project", 0) as w:
        await store.create(project("before"))
        await collect_n(w, 1)
        old_pid = store.hub.listener_pid
        assert await kill_listeners(store.dsn) == 1
        # writes while the hub is down are caught up from the log after it reconnects
        for i in range(5):
            await store.create(project(f"during{i}"))
        events = await collect_until(w, 6)
        assert [e.name for e in events] == [f"during{i}" for i in range(5)]
        assert store.hub.listener_pid not in (None, old_pid)
        await store.create(project("after"))
        (ev,) = await collect_n(w, 1)
        assert ev.name == "after" and ev.revision == 7


async def test_watch_survives_postgres_restart(skip_or_fail: Callable[[str], NoReturn]) -> None:
    # A private server: restarting the session's would disturb every other test.
    from caravanserai.store.embedded import TEST_SETTINGS, EmbeddedError, free_port, start_embedded

    base = tempfile.mkdtemp(prefix="cara-restart-pg-")
    os.chmod(base, 0o711)
    data, port = os.path.join(base, "data"), free_port()
    try:
        try:
            dsn, stop = await asyncio.to_thread(
                start_embedded, data, port=port, settings=TEST_SETTINGS)
        except EmbeddedError as exc:
            skip_or_fail(f"no embedded PostgreSQL: {exc}")
        try:
            async with (
                await PostgresStore.open(dsn, pool_min=2, pool_max=4) as s,
                s.watch("Project", 0) as w,
            ):
                await s.create(project("before"))
                await collect_n(w, 1)
                await asyncio.to_thread(stop)
                dsn2, stop = await asyncio.to_thread(
                    start_embedded, data, port=port, settings=TEST_SETTINGS)
                assert dsn2 == dsn
                async with asyncio.timeout(20):
                    while True:  # the pool may hand out a dead connection or two first
                        try:
                            await s.create(project("after"))
                            break
                        except Unavailable:
                            await asyncio.sleep(0.05)
                (ev,) = await collect_n(w, 1)
                assert (ev.name, ev.revision) == ("after", 2)
                assert await w.next(timeout=0.2) is None
        finally:
            await asyncio.to_thread(stop)
    finally:
        shutil.rmtree(base, ignore_errors=True)
