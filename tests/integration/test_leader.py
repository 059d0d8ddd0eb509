"""Leader election over the API (Lease objects) against a real cara-server on PostgreSQL:
hand-over on cancel, takeover after a kill -9 of a candidate running as its own program
over HTTP, self-fencing when renewals cannot get through, resourceVersion preconditions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from test_client_support import eventually
from test_controllers_harness import manager_settings, serve  # type: ignore[import-not-found]

from caravanserai.api.base import ObjectMeta
from caravanserai.api.lease import Lease, LeaseSpec
from caravanserai.api.problems import AlreadyExists, Conflict
from caravanserai.client.http import CaravanseraiClient
from caravanserai.informer import LeaderElector
from caravanserai.store.postgres import PostgresStore

LEASE, RENEW, RETRY = 2.0, 1.5, 0.2


class Partitionable:
    """A client whose lease calls can be made to hang, as behind a network partition."""

    def __init__(self, client: CaravanseraiClient) -> None:
        self.real = client
        self.cut = asyncio.Event()
        outer = self

        class Leases:
            def __getattr__(self, name: str) -> Any:
                call = getattr(client.leases, name)

                async def guarded(*args: Any, **kw: Any) -> Any:
                    if outer.cut.is_set():
                        await asyncio.Event().wait()  # never answers
                    return await call(*args, **kw)

                return guarded

        self.leases = Leases()


class Candidate:
    """An elector plus a record of what happened to it."""

    def __init__(self, client: Any, identity: str, **kw: object) -> None:
        self.events: list[str] = []
        self.leading = asyncio.Event()
        self.elector = LeaderElector(
            client,
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
async def server_url(store: PostgresStore, database_url: str) -> AsyncIterator[str]:
    async with serve(store, database_url, manager_settings(("none",))) as server:
        yield server.url


@pytest.fixture
async def client(server_url: str) -> AsyncIterator[CaravanseraiClient]:
    async with CaravanseraiClient(server_url) as c:
        yield c


@pytest.fixture
async def candidates(client: CaravanseraiClient) -> AsyncIterator[Callable[..., Candidate]]:
    made: list[Candidate] = []

    def make(identity: str, via: Any = None, **kw: object) -> Candidate:
        c = Candidate(via or client, identity, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.stop()


async def test_one_leader_and_fast_handover_on_cancel(
    candidates: Callable[..., Candidate], client: CaravanseraiClient
) -> None:
    a = candidates("a").start()
    await asyncio.wait_for(a.leading.wait(), 5)
    b = candidates("b").start()
    await asyncio.sleep(LEASE + 0.5)  # b keeps trying through a whole lease: a renews
    assert a.elector.is_leader and not b.elector.is_leader
    assert b.elector.leader == "a"
    lease = await client.leases.get("test-lease")
    assert lease.spec.holder_identity == "a" and lease.spec.lease_duration_seconds == LEASE
    await a.stop()  # clean stop releases the lease
    assert a.events == ["started", "stopped"]
    # Released, not left to expire: the stored lease names no holder any more (or already
    # b, which takes a released lease at its next try instead of after the lease duration).
    released = await client.leases.get("test-lease")
    assert released.spec.holder_identity in (None, "", "b"), released.spec
    await asyncio.wait_for(b.leading.wait(), 5)
    lease = await client.leases.get("test-lease")
    assert lease.spec.holder_identity == "b" and lease.spec.lease_transitions == 1


async def test_leader_killed_hard_is_replaced_within_the_lease(
    server_url: str, candidates: Callable[..., Candidate]
) -> None:
    # The doomed leader is a program of its own, electing over HTTP.
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from caravanserai.client.http import CaravanseraiClient
        from caravanserai.informer import LeaderElector

        async def lead():
            print("LEADING", flush=True)
            await asyncio.Event().wait()

        async def main():
            async with CaravanseraiClient(sys.argv[1]) as client:
                await LeaderElector(client, name="test-lease", identity="doomed",
                                    lease_duration={LEASE}, renew_deadline={RENEW},
                                    retry_period={RETRY}, on_started_leading=lead).run()

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, server_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while (line := await proc.stdout.readline()).strip() != b"LEADING":
                assert line, "the leader process exited"
        b = candidates("b").start()
        await asyncio.sleep(RETRY * 3)
        assert not b.elector.is_leader and b.elector.leader == "doomed"
        os.kill(proc.pid, signal.SIGKILL)  # no release, no goodbye
        # Taken over once the unrenewed lease expires (the bound is generous: a loaded
        # machine must not fail this; what it proves is that b takes over by itself).
        await asyncio.wait_for(b.leading.wait(), LEASE + 5)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_leader_that_cannot_renew_steps_down(
    client: CaravanseraiClient, candidates: Callable[..., Candidate]
) -> None:
    link = Partitionable(client)
    a = candidates("a", via=link).start()
    await asyncio.wait_for(a.leading.wait(), 5)
    link.cut.set()  # a's renewals hang, as with a partitioned network
    await eventually(lambda: not a.elector.is_leader, within=RENEW + 2)
    assert a.events == ["started", "stopped"]
    link.cut.clear()
    # once the server answers again, a leads again
    await asyncio.wait_for(a.leading.wait(), LEASE + 3)
    assert a.events == ["started", "stopped", "started"]


async def test_leader_survives_a_dropped_connection(
    client: CaravanseraiClient, candidates: Callable[..., Candidate]
) -> None:
    a = candidates("a").start()
    await asyncio.wait_for(a.leading.wait(), 5)
    await client.close()  # the client opens a new session on its next call
    await asyncio.sleep(RENEW + 0.5)
    assert a.elector.is_leader and a.events == ["started"], "reconnected and renewed in time"


async def test_work_that_returns_releases_and_ends_run(client: CaravanseraiClient) -> None:
    done = asyncio.Event()

    async def short() -> None:
        done.set()

    elector = LeaderElector(
        client, name="short", on_started_leading=short,
        lease_duration=LEASE, renew_deadline=RENEW, retry_period=RETRY,
    )
    await asyncio.wait_for(elector.run(), 10)
    assert done.is_set() and not elector.is_leader
    assert (await client.leases.get("short")).spec.holder_identity is None


async def test_lease_writes_are_conditional(client: CaravanseraiClient) -> None:
    lease = await client.leases.create(
        Lease(metadata=ObjectMeta(name="cond"), spec=LeaseSpec(holder_identity="x"))
    )
    with pytest.raises(AlreadyExists):
        await client.leases.create(Lease(metadata=ObjectMeta(name="cond")))
    mine = lease.model_copy(update={"spec": LeaseSpec(holder_identity="y")})
    updated = await client.leases.update(mine)
    assert updated.spec.holder_identity == "y"
    # The same stale version again: someone else (y's write) got in between.
    with pytest.raises(Conflict):
        await client.leases.update(lease.model_copy(update={"spec": LeaseSpec()}))


def test_durations_must_be_ordered() -> None:
    async def noop() -> None: ...

    with pytest.raises(ValueError):
        LeaderElector(CaravanseraiClient("http://127.0.0.1:1"), on_started_leading=noop,
                      lease_duration=10, renew_deadline=10)
