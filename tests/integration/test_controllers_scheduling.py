"""The scheduler inside a real cara-server (PostgreSQL, HTTP): placement, spread, waiting
for a node, and reacting at once to nodes and to projects returned to Pending."""

from __future__ import annotations

import asyncio
from collections import Counter

from test_controllers_harness import (  # type: ignore[import-not-found]
    a_project,
    eventually,
    manager_settings,
    ready_node,
    scheduler_idle_with,
    serve,
    wait_phase,
)

from caravanserai.api.base import get_condition
from caravanserai.api.node import Heartbeat, NodeState
from caravanserai.api.project import CONDITION_PHASE, ProjectPhase
from caravanserai.store.postgres import PostgresStore


async def test_full_scheduling_spreads_over_ready_schedulable_nodes(
    store: PostgresStore, database_url: str
) -> None:
    async with serve(store, database_url, manager_settings(("scheduler",))) as server:
        c = server.client
        for name in ("n1", "n2", "n3"):
            await ready_node(c, name)
        await ready_node(c, "cordoned", unschedulable=True)
        await c.nodes.create(
            {"metadata": {"name": "silent"}, "kind": "Node", "apiVersion": "caravanserai/v1"}
        )  # NotReady: never heartbeated
        await ready_node(c, "drained")
        await c.nodes.heartbeat("drained", Heartbeat(state=NodeState.DRAINING))
        await asyncio.gather(*(c.projects.create(a_project(f"p{i:02d}")) for i in range(30)))

        async def all_scheduled() -> list | None:
            items = (await c.projects.list()).items
            done = [p for p in items if p.status.phase is ProjectPhase.SCHEDULED]
            return items if len(done) == 30 else None

        items = await eventually(all_scheduled, what="30 projects Scheduled")
        per_node = Counter(p.status.node_ref for p in items)
        assert per_node == {"n1": 10, "n2": 10, "n3": 10}
        phase = get_condition(items[0].status.conditions, CONDITION_PHASE)
        assert phase is not None and phase.reason == "Scheduled"
        assert items[0].status.node_ref in (phase.message or "")


async def test_waits_for_a_node_then_schedules_as_soon_as_one_is_ready(
    store: PostgresStore, database_url: str
) -> None:
    async with serve(store, database_url, manager_settings(("scheduler",))) as server:
        c = server.client
        await c.projects.create(a_project("early"))
        await c.nodes.create(
            {"metadata": {"name": "n1"}, "kind": "Node", "apiVersion": "caravanserai/v1"}
        )
        # Let the scheduler see the project and finish with it: it must wait, not place it.
        await scheduler_idle_with(server, "early")
        assert (await c.projects.get("early")).status.phase is ProjectPhase.PENDING
        await c.nodes.heartbeat("n1", Heartbeat(state=NodeState.READY))
        # Far from the original's 30 s resync: the node event itself requeued the project
        # (the wait's bound is what fails a resync-driven scheduler).
        p = await wait_phase(c, "early", ProjectPhase.SCHEDULED, within=10)
        assert p.status.node_ref == "n1"


async def test_a_project_returned_to_pending_is_rescheduled_at_once(
    store: PostgresStore, database_url: str
) -> None:
    async with serve(store, database_url, manager_settings(("scheduler",))) as server:
        c = server.client
        await ready_node(c, "n1")
        await c.projects.create(a_project("p"))
        await wait_phase(c, "p", ProjectPhase.SCHEDULED)
        # The rescheduler's move, made by hand: back to Pending.
        await c.projects.patch_status("p", ProjectPhase.PENDING, "NodeNotReady", "moved")
        async def rescheduled() -> bool:
            p = await c.projects.get("p")
            return p.status.phase is ProjectPhase.SCHEDULED and len(p.status.history) >= 4

        # at once: the wait's bound is well under any resync
        await eventually(rescheduled, within=10, what="Scheduled again")
