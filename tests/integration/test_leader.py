"""Leader election on a real PostgreSQL: hand-over on cancel, takeover after a kill -9,
self-fencing when renewals cannot get through."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import psycopg
import pytest
from lease_support import read_lease
from test_client_support import eventually

from caravanserai.informer import LeaderElector

LEASE, RENEW, RETRY = 2.0, 1.5, 0.2
NAME = "test-lease"
RENEW_DELTA = timedelta(seconds=RENEW)


class Candidate:
    """An elector plus a record of what happened to it."""

    def __init__(self, url: str, identity: str, **kw: object) -> None:
        self.events: list[str] = []
        self.leading = asyncio.Event()
        self.elector = LeaderElector(
            url,
            name="test-lease",
            identity=identity,
            lease_duration=LEASE,
            renew_deadline=RENEW,
            retry_period=RETRY,
            on_started_leading=self.work,
            on_stopped_leading=self.stopped,
            **kw,  # type: ignore[arg-type]
        )
        self.task: asyncio.Task[None] | None = None

    async def work(self) -> None:
        self.events.append("started")
        self.leading.set()
        await asyncio.Event().wait()

    def stopped(self) -> None:
        self.events.append("stopped")
        self.leading.clear()

    def start(self) -> Candidate:
        self.task = asyncio.create_task(self.elector.run())
        return self

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@pytest.fixture
async def candidates(database_url: str) -> AsyncIterator[Callable[..., Candidate]]:
    made: list[Candidate] = []

    def make(identity: str, **kw: object) -> Candidate:
        c = Candidate(database_url, identity, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.stop()


async def test_one_leader_and_fast_handover_on_cancel(
    database_url: str, candidates: Callable[..., Candidate],
) -> None:
    a = candidates("a").start()
    await asyncio.wait_for(a.leading.wait(), 5)
    first = await read_lease(database_url, NAME)
    b = candidates("b").start()

    async def renewed_through_a_lease() -> bool:  # on the database's clock
        return (await read_lease(database_url, NAME)).renewed_at > first.expires_at

    await eventually(renewed_through_a_lease, within=LEASE + 5)
    # b kept trying through a whole lease while a renewed it: a still leads
    assert a.elector.is_leader and not b.elector.is_leader
    assert b.elector.leader == "a"
    before = await read_lease(database_url, NAME)
    await a.stop()  # clean stop releases the lease
    assert a.events == ["started", "stopped"]
    await asyncio.wait_for(b.leading.wait(), 5)
    taken = await read_lease(database_url, NAME)
    assert taken.holder == "b" and taken.acquired_at is not None
    # released, so taken before it could have expired (the database's clock)
    assert taken.acquired_at < before.expires_at


async def test_leader_killed_hard_is_replaced_within_the_lease(
    database_url: str, candidates: Callable[..., Candidate]
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from caravanserai.informer import LeaderElector

        async def lead():
            print("LEADING", flush=True)
            await asyncio.Event().wait()

        asyncio.run(LeaderElector(sys.argv[1], name="test-lease", identity="doomed",
                                  lease_duration={LEASE}, renew_deadline={RENEW},
                                  retry_period={RETRY}, on_started_leading=lead).run())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, database_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while (line := await proc.stdout.readline()).strip() != b"LEADING":
                assert line, "the leader process exited"
        b = candidates("b").start()
        await eventually(lambda: b.elector.leader == "doomed", within=5)
        assert not b.elector.is_leader
        os.kill(proc.pid, signal.SIGKILL)  # no release, no goodbye
        await proc.wait()
        last = await read_lease(database_url, NAME)  # the dead leader's last renewal
        assert last.holder == "doomed"
        await asyncio.wait_for(b.leading.wait(), LEASE + 5)
        taken = await read_lease(database_url, NAME)
        # taken over once the lease expired, and not before (the database's clock)
        assert taken.holder == "b" and taken.acquired_at is not None
        assert taken.acquired_at >= last.expires_at
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_leader_that_cannot_renew_steps_down(
    database_url: str, candidates: Callable[..., Candidate]
) -> None:
    a = candidates("a").start()
    await asyncio.wait_for(a.leading.wait(), 5)
    # Hold the lease row locked: a's renewals block, as with a partitioned database.
    async with await psycopg.AsyncConnection.connect(database_url) as blocker:
        await blocker.execute("SELECT * FROM cara_leases WHERE name = 'test-lease' FOR UPDATE")
        await eventually(lambda: not a.elector.is_leader, within=RENEW + 2)
        # a fenced itself while its lease was still valid: nobody else could have led yet
        async with await psycopg.AsyncConnection.connect(database_url) as probe:
            cur = await probe.execute(
                "SELECT holder, now() < renewed_at + lease_seconds * interval '1 second' "
                "FROM cara_leases WHERE name = %s", (NAME,))
            assert await cur.fetchone() == ("a", True)
        assert a.events == ["started", "stopped"]
        await blocker.rollback()
    # once the database answers again, a leads again
    await asyncio.wait_for(a.leading.wait(), LEASE + 3)
    assert a.events == ["started", "stopped", "started"]


async def test_leader_survives_a_dropped_connection(
    database_url: str, candidates: Callable[..., Candidate]
) -> None:
    a = candidates("a").start()
    await asyncio.wait_for(a.leading.wait(), 5)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT now(), count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'cara-leader-test-lease'"
        )
        row = await cur.fetchone()
    assert row is not None and row[1] == 1
    killed_at = row[0]

    async def renewed_past_the_deadline() -> bool:  # on the database's clock
        return (await read_lease(database_url, NAME)).renewed_at > killed_at + RENEW_DELTA

    await eventually(renewed_past_the_deadline, within=RENEW + 5)
    assert a.elector.is_leader and a.events == ["started"], "reconnected and renewed in time"


async def test_work_that_returns_releases_and_ends_run(database_url: str) -> None:
    done = asyncio.Event()

    async def short() -> None:
        done.set()

    elector = LeaderElector(
        database_url, name="short", on_started_leading=short,
        lease_duration=LEASE, renew_deadline=RENEW, retry_period=RETRY,
    )
    await asyncio.wait_for(elector.run(), 10)
    assert done.is_set() and not elector.is_leader
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT holder FROM cara_leases WHERE name = 'short'")
        assert await cur.fetchone() == (None,)


def test_durations_must_be_ordered() -> None:
    async def noop() -> None: ...

    with pytest.raises(ValueError):
        LeaderElector("postgresql://x", on_started_leading=noop,
                      lease_duration=10, renew_deadline=10)
