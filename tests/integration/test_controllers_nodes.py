"""node-health and the rescheduler in a real cara-server: heartbeat timeouts (short real
timeouts, and the default 90 s driven by a FakeClock), moving Scheduled and Running projects
off a dead node, clearing NotReadyAt on recovery, missing nodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from test_controllers_harness import (  # type: ignore[import-not-found]
    a_project,
    eventually,
    heartbeating,
    manager_settings,
    ready_node,
    report,
    serve,
    wait_node_state,
    wait_phase,
)

from caravanserai.api.base import ConditionStatus, get_condition
from caravanserai.api.node import CONDITION_READY, NodeState
from caravanserai.api.project import CONDITION_NOT_READY_AT, CONDITION_PHASE, Project, ProjectPhase
from caravanserai.informer import FakeClock
from caravanserai.store.postgres import PostgresStore

P = ProjectPhase


async def test_node_goes_not_ready_at_its_heartbeat_deadline_and_recovers(
    store: PostgresStore, database_url: str
) -> None:
    settings = manager_settings(("node-health",), node_health={"heartbeat_timeout": 1.0})
    async with serve(store, database_url, settings) as server:
        c = server.client
        await ready_node(c, "n1")
        node = await wait_node_state(c, "n1", NodeState.NOT_READY, within=10)
        ready = get_condition(node.status.conditions, CONDITION_READY)
        assert ready is not None and ready.status is ConditionStatus.FALSE
        assert ready.reason == "HeartbeatTimeout"
        assert node.status.last_heartbeat is not None and ready.last_transition_time is not None
        # Not before the deadline (recorded times); "not a 30 s tick later" is the wait's bound.
        deadline = node.status.last_heartbeat + timedelta(seconds=1.0)
        assert ready.last_transition_time >= deadline

        # A timestamp-only heartbeat (no state): node-health itself brings it back.
        await c.nodes.heartbeat("n1")
        node = await wait_node_state(c, "n1", NodeState.READY, within=10)
        ready = get_condition(node.status.conditions, CONDITION_READY)
        assert ready is not None and (ready.status, ready.reason) == (
            ConditionStatus.TRUE,
            "AgentReady",
        )


async def test_heartbeats_that_renew_only_the_lease_keep_the_node_ready(
    store: PostgresStore, database_url: str
) -> None:
    """Routine heartbeats leave the Node (and its lastHeartbeat) alone for a minute; node-health
    reads the node lease before calling a node silent, so it stays Ready well past its
    timeout, and goes NotReady once the heartbeats stop."""
    settings = manager_settings(("node-health",), node_health={"heartbeat_timeout": 2.0})
    async with serve(store, database_url, settings) as server:
        c = server.client
        await ready_node(c, "n1")
        first = await c.nodes.get("n1")
        ready = get_condition(first.status.conditions, CONDITION_READY)
        assert first.status.last_heartbeat is not None and ready is not None
        async with heartbeating(c, "n1", every=0.2) as alive:

            async def past_two_timeouts() -> datetime | None:
                lease = await c.nodes.last_heartbeat("n1")
                assert lease is not None and first.status.last_heartbeat is not None
                return lease if lease > first.status.last_heartbeat + timedelta(seconds=4) else None

            await eventually(past_two_timeouts, within=20, what="heartbeats past two timeouts")
            node = await c.nodes.get("n1")
            # Not rewritten by a heartbeat, and never NotReady in between.
            assert node.status.state is NodeState.READY
            assert node.status.last_heartbeat == first.status.last_heartbeat
            now_ready = get_condition(node.status.conditions, CONDITION_READY)
            assert now_ready is not None
            assert now_ready.last_transition_time == ready.last_transition_time
            alive.clear()
            await wait_node_state(c, "n1", NodeState.NOT_READY, within=15)


async def test_default_90s_timeout_with_a_fake_clock(
    store: PostgresStore, database_url: str
) -> None:
    clock = FakeClock(start=datetime.now(UTC) - timedelta(seconds=1))
    async with serve(
        store, database_url, manager_settings(("node-health",)), clock=clock
    ) as server:
        c = server.client
        await ready_node(c, "n1")

        async def timer_armed() -> bool:
            runnable = server.manager.controllers.get("node-health")
            return runnable is not None and runnable.queue.delayed == 1  # type: ignore[attr-defined]

        await eventually(timer_armed, what="the node's timer")
        await clock.advance(85)
        assert (await c.nodes.get("n1")).status.state is NodeState.READY
        await clock.advance(7)  # past lastHeartbeat + 90 s
        await wait_node_state(c, "n1", NodeState.NOT_READY, within=10)


async def test_projects_leave_a_dead_node_scheduled_at_once_running_after_grace(
    store: PostgresStore, database_url: str
) -> None:
    settings = manager_settings(
        node_health={"heartbeat_timeout": 1.0}, rescheduler={"running_grace": 5.0}
    )
    async with serve(store, database_url, settings) as server:
        c = server.client
        await ready_node(c, "a")
        async with heartbeating(c, "a") as alive:
            await c.projects.create(a_project("sched"))
            await c.projects.create(a_project("run"))
            await wait_phase(c, "sched", P.SCHEDULED)
            await wait_phase(c, "run", P.SCHEDULED)
            await report(c, "run", P.RUNNING, "ContainersRunning")
            await ready_node(c, "b")
            alive.add("b")
            alive.discard("a")  # a's agent dies

            node_a = await wait_node_state(c, "a", NodeState.NOT_READY, within=10)
            gone = get_condition(node_a.status.conditions, CONDITION_READY)
            assert gone is not None and gone.last_transition_time is not None

            sched = await _wait_on_node(c, "sched", "b")
            moved = next(h for h in reversed(sched.status.history) if h.phase is P.PENDING)
            assert moved.reason == "NodeNotReady"
            sched_moved = moved

            async def marked() -> Project | None:
                p = await c.projects.get("run")
                cond = get_condition(p.status.conditions, CONDITION_NOT_READY_AT)
                return p if cond is not None and p.status.phase is P.RUNNING else None

            running = await eventually(marked, within=10, what="NotReadyAt on run")
            mark = get_condition(running.status.conditions, CONDITION_NOT_READY_AT)
            assert mark is not None and mark.reason == "NodeNotReady"
            assert mark.last_transition_time is not None

            run = await _wait_on_node(c, "run", "b")
            moved = next(h for h in reversed(run.status.history) if h.phase is P.PENDING)
            assert moved.reason == "NodeNotReady"
            # Running: only after the grace period, counted from the mark (recorded times)...
            assert moved.time >= mark.last_transition_time + timedelta(seconds=5.0 - 0.05)
            # ...while the Scheduled project was reset at once, before that grace ran out.
            assert gone.last_transition_time <= sched_moved.time < moved.time
            # The grace clock does not follow the project to its next node (REFERENCE §10.10).
            assert get_condition(run.status.conditions, CONDITION_NOT_READY_AT) is None


async def test_not_ready_at_is_cleared_when_the_node_recovers(
    store: PostgresStore, database_url: str
) -> None:
    settings = manager_settings(
        node_health={"heartbeat_timeout": 1.0}, rescheduler={"running_grace": 60.0}
    )
    async with serve(store, database_url, settings) as server:
        c = server.client
        await ready_node(c, "a")
        async with heartbeating(c, "a") as alive:
            await c.projects.create(a_project("run"))
            await wait_phase(c, "run", P.SCHEDULED)
            await report(c, "run", P.RUNNING, "ContainersRunning")
            alive.discard("a")

            async def condition_is(present: bool) -> bool:
                p = await c.projects.get("run")
                has = get_condition(p.status.conditions, CONDITION_NOT_READY_AT) is not None
                return has is present

            await eventually(lambda: condition_is(True), within=10, what="NotReadyAt written")
            alive.add("a")  # the agent is back
            await wait_node_state(c, "a", NodeState.READY, within=10)
            await eventually(lambda: condition_is(False), within=10, what="NotReadyAt cleared")
            p = await c.projects.get("run")
            assert (p.status.phase, p.status.node_ref) == (P.RUNNING, "a")


async def test_projects_on_a_missing_node_are_rescheduled(
    store: PostgresStore, database_url: str
) -> None:
    settings = manager_settings(("scheduler", "rescheduler"), rescheduler={"running_grace": 1.0})
    async with serve(store, database_url, settings) as server:
        c = server.client
        await ready_node(c, "a")
        await c.projects.create(a_project("sched"))
        await c.projects.create(a_project("run"))
        await wait_phase(c, "sched", P.SCHEDULED)
        await wait_phase(c, "run", P.SCHEDULED)
        await report(c, "run", P.RUNNING, "ContainersRunning")
        await c.nodes.delete("a", force=True)  # the original never rescheduled these (§10.17)
        sched = await wait_phase(c, "sched", P.PENDING, within=10)
        run = await wait_phase(c, "run", P.PENDING, within=10)
        for p in (sched, run):
            phase = get_condition(p.status.conditions, CONDITION_PHASE)
            assert phase is not None and phase.reason == "NodeNotReady"
            assert "no longer exists" in (phase.message or "")
            assert p.status.node_ref is None


async def _wait_on_node(c: object, name: str, node: str) -> Project:
    async def check() -> Project | None:
        p = await c.projects.get(name)  # type: ignore[attr-defined]
        ok = p.status.phase is P.SCHEDULED and p.status.node_ref == node
        return p if ok else None

    return await eventually(check, within=15, what=f"{name} Scheduled on {node}")
