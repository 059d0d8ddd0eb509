"""Two cara-server apps (two stores: two "processes") on one database: one leader runs the
controllers; when it dies (lease not released) or stops (released), the other takes over
within the lease time and the controllers keep working; a leader that loses its lease stops
its controllers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from lease_support import read_lease
from test_controllers_harness import (  # type: ignore[import-not-found]
    LEASE,
    Server,
    a_project,
    eventually,
    manager_settings,
    ready_node,
    serve,
    wait_phase,
)

from caravanserai.api.base import utcnow
from caravanserai.api.problems import Conflict
from caravanserai.api.project import ProjectPhase
from caravanserai.client.http import CaravanseraiClient
from caravanserai.server.manager import MANAGER
from caravanserai.store.postgres import PostgresStore

Factory = Callable[..., Awaitable[PostgresStore]]
LEASE_NAME = "controller-manager"


@contextlib.asynccontextmanager
async def two_servers(
    store_factory: Factory, database_url: str, *, release_on_stop: bool
) -> AsyncIterator[tuple[Server, Server]]:
    settings = manager_settings(("scheduler",), release_on_stop=release_on_stop)
    store_one, store_two = await store_factory(), await store_factory()
    async with (
        serve(store_one, database_url, settings, identity="one") as one,
        serve(store_two, database_url, settings, identity="two") as two,
    ):
        yield one, two


async def the_leader(*servers: Server) -> Server:
    async def check() -> Server | None:
        leaders = [s for s in servers if not s.stopped and s.manager.is_leader]
        assert len(leaders) <= 1, "two leaders at once"
        return leaders[0] if leaders else None

    return await eventually(check, within=15, what="a leader")


@pytest.mark.parametrize("release_on_stop", [False, True], ids=["crash", "clean-stop"])
async def test_the_other_manager_takes_over_and_controllers_keep_working(
    store_factory: Factory, database_url: str, release_on_stop: bool
) -> None:
    async with two_servers(store_factory, database_url, release_on_stop=release_on_stop) as (
        one,
        two,
    ):
        leader = await the_leader(one, two)
        follower = two if leader is one else one
        assert not follower.manager.controllers  # only the leader runs controllers
        c = follower.client  # any replica serves the API
        await ready_node(c, "n1")
        await c.projects.create(a_project("before"))
        await wait_phase(c, "before", ProjectPhase.SCHEDULED)
        # The controllers' own metrics (work queues, reconciles) are on the server's /metrics.
        async with aiohttp.ClientSession() as http, http.get(f"{leader.url}/metrics") as resp:
            text = await resp.text()
        assert 'caravanserai_workqueue_adds_total{name="scheduler"}' in text
        assert "cara_http_requests_total" in text

        before = await read_lease(database_url, LEASE_NAME)
        await leader.stop()  # crash: lease left to expire / clean: lease released
        assert not leader.app[MANAGER].is_leader
        last = await read_lease(database_url, LEASE_NAME)  # no renewals after this
        new = await the_leader(one, two)
        assert new is follower
        taken = await read_lease(database_url, LEASE_NAME)
        assert taken.holder != before.holder and taken.acquired_at is not None
        # On the database's clock: a crashed leader's lease must expire before anyone takes
        # it; a released one is taken before it would have expired.
        if release_on_stop:
            assert taken.acquired_at < before.expires_at
        else:
            assert last.holder == before.holder
            assert taken.acquired_at >= last.expires_at

        await c.projects.create(a_project("after"))
        p = await wait_phase(c, "after", ProjectPhase.SCHEDULED)
        assert p.status.node_ref == "n1"
        assert new.manager.terms == 1


async def set_holder(c: CaravanseraiClient, holder: str | None) -> None:
    """Write the controller-manager Lease's holder (retrying a 409 from a renewal)."""

    async def write() -> bool:
        lease = await c.leases.get("controller-manager")
        spec = lease.spec.model_copy(update={"holder_identity": holder, "renew_time": utcnow()})
        try:
            await c.leases.update(lease.model_copy(update={"spec": spec}))
        except Conflict:
            return False
        return True

    await eventually(write, within=10, what=f"lease holder {holder}")


async def test_a_leader_that_loses_its_lease_stops_its_controllers(
    store_factory: Factory, database_url: str
) -> None:
    store = await store_factory()
    async with serve(store, database_url, manager_settings(("scheduler",))) as server:
        manager = server.manager
        await the_leader(server)
        c = server.client
        await ready_node(c, "n1")
        # Another candidate grabs the lease (as if ours had expired while we were frozen),
        # through the API like any candidate.
        await set_holder(c, "thief")

        async def stepped_down() -> bool:
            return not manager.is_leader and not manager.controllers

        await eventually(stepped_down, within=LEASE["renew_deadline"] + 3, what="step-down")
        await c.projects.create(a_project("orphan"))
        assert (await c.projects.get("orphan")).status.phase is ProjectPhase.PENDING
        await set_holder(c, None)

        await the_leader(server)
        await wait_phase(c, "orphan", ProjectPhase.SCHEDULED)
        assert manager.terms == 2  # a fresh term: new informers, new caches


async def test_no_manager_when_no_controller_is_enabled(
    store: PostgresStore, database_url: str
) -> None:
    async with serve(store, database_url, manager_settings(("none",))) as server:
        assert MANAGER not in server.app
        await server.client.projects.create(a_project("p"))
        assert (await server.client.projects.get("p")).status.phase is ProjectPhase.PENDING
