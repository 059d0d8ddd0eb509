"""e2e: two ``cara-server`` replicas on one PostgreSQL database, controllers enabled in both.

Short leader election (lease 3 s, renew deadline 2 s, retry 0.5 s) and a 3 s heartbeat
timeout. The replica that leads is the one whose ``/metrics`` reports
``caravanserai_leader_is_leader{lease="controller-manager"} 1``, cross-checked with the
controller-manager Lease (its holder identity carries the process id) and the
replica's ``controller_manager.leading`` log line.

Proves: writes through either replica reach watches opened on both, identically and in
revision order; when the leader is SIGKILLed (its lease is not released) the other replica
takes the lease and its controllers work: a Pending project created after the kill is
scheduled onto a Ready node (a Node the test keeps Ready with heartbeats), and node-health
and the rescheduler act when those heartbeats stop.

Needs PostgreSQL only (no Docker, no agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agent_e2e_support import manifest, unique, wait_phase, wait_until
from cluster_e2e_support import (
    ServerHandle,
    leader_pid,
    reports_leader,
    start_server,
    wait_node_state,
)

from caravanserai.api import Heartbeat, NodeState, NotFound, Project
from caravanserai.api.watch import EventType
from caravanserai.client import CaravanseraiClient
from caravanserai.client.errors import ClientError

LEASE = 3.0
REPLICA_ENV = {
    "CARA_CONTROLLERS": "*",
    "CARA_LEADER_LEASE_DURATION": f"{LEASE:g}s",
    "CARA_LEADER_RENEW_DEADLINE": "2s",
    "CARA_LEADER_RETRY_PERIOD": "0.5s",
    "CARA_HEARTBEAT_TIMEOUT": "3s",
    "CARA_RUNNING_GRACE": "3s",
}


@dataclass
class Replica:
    server: ServerHandle
    api: CaravanseraiClient


@pytest.fixture
async def replicas(database_url: str, tmp_path: Path) -> AsyncIterator[list[Replica]]:
    servers: list[ServerHandle] = []
    try:
        for name in ("cara-server-a", "cara-server-b"):
            servers.append(await start_server(database_url, tmp_path, name, REPLICA_ENV))
        async with (
            CaravanseraiClient(servers[0].url) as a,
            CaravanseraiClient(servers[1].url) as b,
        ):
            yield [Replica(servers[0], a), Replica(servers[1], b)]
    finally:
        for server in servers:
            server.stop()


@dataclass
class Recorder:
    """Collects the (type, name, resourceVersion) of a watch's events in the background."""

    events: list[tuple[str, str, str]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self, api: CaravanseraiClient, kind: str, resource_version: str) -> None:
        async def run() -> None:
            resource = api.projects if kind == "projects" else api.nodes
            watch: Any = resource.watch(resource_version=resource_version)
            async for event in watch:
                if event.type is EventType.ERROR:
                    raise AssertionError(f"watch error: {event.error!r}")
                if event.type is not EventType.BOOKMARK:
                    self.events.append((str(event.type), event.name or "", event.resource_version))

        self.task = asyncio.create_task(run())

    def has(self, wanted: list[tuple[str, str, str | None]]) -> bool:
        if self.task is not None and self.task.done():
            self.task.result()  # a watch that ended is a failure: say why
            raise AssertionError("watch ended")
        got = {(t, n, rv) for t, n, rv in self.events}
        got_any_rv = {(t, n) for t, n, _ in self.events}
        return all((t, n, rv) in got if rv else (t, n) in got_any_rv for t, n, rv in wanted)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def test_writes_through_either_replica_reach_watches_on_both(
    replicas: list[Replica],
) -> None:
    a, b = replicas
    projects_rv = (await a.api.projects.list()).resource_version
    nodes_rv = (await b.api.nodes.list()).resource_version
    recorders = {
        (replica.server.name, kind): Recorder()
        for replica in replicas
        for kind in ("projects", "nodes")
    }
    for replica in replicas:
        recorders[replica.server.name, "projects"].start(replica.api, "projects", projects_rv)
        recorders[replica.server.name, "nodes"].start(replica.api, "nodes", nodes_rv)
    try:
        p1, p2, node = unique("via-a"), unique("via-b"), unique("node")
        created1 = await a.api.projects.create(manifest(p1, [{"name": "s", "image": "x:1"}]))
        created2 = await b.api.projects.create(manifest(p2, [{"name": "s", "image": "x:1"}]))
        # The scheduler may already have marked p1 Unschedulable (there is no node): update
        # from the version as it is now, with that resourceVersion as the precondition.
        current1 = await b.api.projects.get(p1)
        current1.spec.services[0].image = "x:2"
        updated1 = await b.api.projects.update(current1)
        registered = await b.api.nodes.create({"metadata": {"name": node}})
        await a.api.projects.delete(p2)  # Pending, no node: removed at once
        with pytest.raises(NotFound):
            await b.api.projects.get(p2)

        want_projects: list[tuple[str, str, str | None]] = [
            ("ADDED", p1, created1.metadata.resource_version),
            ("ADDED", p2, created2.metadata.resource_version),
            ("MODIFIED", p1, updated1.metadata.resource_version),
            ("DELETED", p2, None),
        ]
        want_nodes: list[tuple[str, str, str | None]] = [
            ("ADDED", node, registered.metadata.resource_version),
        ]
        for (_, kind), recorder in recorders.items():
            want = want_projects if kind == "projects" else want_nodes

            async def seen(recorder: Recorder = recorder, want: Any = want) -> bool:
                return recorder.has(want)

            await wait_until(seen, within=10, what=f"{want} on every watch")

        # A sentinel write of each kind fixes a revision both replicas' watches must reach;
        # everything up to it must then be on both, identical (the controllers may still
        # be writing after it, so the lists are cut there, not at the shorter one).
        sentinels = {
            "projects": await a.api.projects.create(
                manifest(unique("sentinel"), [{"name": "s", "image": "x:1"}])),
            "nodes": await a.api.nodes.create({"metadata": {"name": unique("sentinel")}}),
        }
        for kind in ("projects", "nodes"):
            upto = int(sentinels[kind].metadata.resource_version or 0)
            for replica in replicas:
                recorder = recorders[replica.server.name, kind]

                async def reached(recorder: Recorder = recorder, upto: int = upto) -> bool:
                    return any(int(rv) >= upto for _, _, rv in recorder.events)

                await wait_until(reached, within=10, what=f"{kind} watch at {upto}")
            on_a = [e for e in recorders[a.server.name, kind].events if int(e[2]) <= upto]
            on_b = [e for e in recorders[b.server.name, kind].events if int(e[2]) <= upto]
            # The same events, in the same (revision) order, on both replicas: all of them.
            assert on_a == on_b, (kind, on_a, on_b)
            assert on_a[-1][1] == sentinels[kind].metadata.name
            revisions = [int(rv) for _, _, rv in on_a]
            assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
        # Our own writes, in order (leaving out the scheduler's status writes to them).
        ours = [
            e for e in recorders[a.server.name, "projects"].events
            if e[1] in (p1, p2)
            and (e[0] != "MODIFIED" or e[2] == updated1.metadata.resource_version)
        ]
        assert [(t, n) for t, n, _ in ours] == [(t, n) for t, n, _ in want_projects]
    finally:
        for recorder in recorders.values():
            await recorder.stop()


async def current_leader(database_url: str, replicas: list[Replica]) -> Replica | None:
    """The one live replica that says so on /metrics AND holds the lease in the database."""
    live = [r for r in replicas if r.server.process.running]
    claiming = [r for r in live if await reports_leader(r.server)]
    assert len(claiming) <= 1, f"{len(claiming)} replicas report leading"
    pid = await leader_pid(database_url)
    return next((r for r in claiming if r.server.pid == pid), None)


async def keep_ready(api: CaravanseraiClient, node: str, stop: asyncio.Event) -> None:
    """Heartbeat ``node`` (state Ready) every 0.5 s, as its agent would, until ``stop``."""
    while not stop.is_set():
        with contextlib.suppress(ClientError, OSError):
            await api.nodes.heartbeat(node, Heartbeat(state=NodeState.READY))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()


async def wait_scheduled(api: CaravanseraiClient, name: str, node: str, within: float) -> Project:
    async def probe() -> Project | None:
        p = await api.projects.get(name)
        return p if str(p.status.phase) == "Scheduled" and p.status.node_ref == node else None

    return await wait_until(probe, within=within, what=f"{name} Scheduled onto {node}")


async def test_leader_killed_the_other_replica_takes_over(
    replicas: list[Replica], database_url: str
) -> None:
    leader = await wait_until(lambda: current_leader(database_url, replicas), within=15,
                              what="a replica holding the controller-manager lease")
    other = next(r for r in replicas if r is not leader)
    assert leader.server.log_events("controller_manager.leading")
    terms_before = len(other.server.log_events("controller_manager.leading"))

    # A node kept Ready by the test's heartbeats, through the replica that will survive.
    node = unique("fake-node")
    await other.api.nodes.create({"metadata": {"name": node}})
    stop_beats = asyncio.Event()
    beats = asyncio.create_task(keep_ready(other.api, node, stop_beats))
    try:
        await wait_node_state(other.api, node, NodeState.READY, within=10)
        before = unique("before")
        await other.api.projects.create(manifest(before, [{"name": "s", "image": "x:1"}]))
        await wait_scheduled(other.api, before, node, within=10)

        leader.server.kill()
        killed_at = time.monotonic()
        after = unique("after")
        await other.api.projects.create(manifest(after, [{"name": "s", "image": "x:1"}]))
        await wait_scheduled(other.api, after, node, within=LEASE + 15)
        took_over_in = time.monotonic() - killed_at

        assert await current_leader(database_url, replicas) is other
        assert len(other.server.log_events("controller_manager.leading")) > terms_before
    finally:
        stop_beats.set()
        await beats

    # The new leader's node-health and rescheduler work too: with the heartbeats stopped
    # the node goes NotReady and its Scheduled projects go back to Pending.
    await wait_node_state(other.api, node, NodeState.NOT_READY, within=15)
    for name in (before, after):
        project = await wait_phase(other.api, name, "Pending", within=10)
        assert project.status.node_ref is None
    print(f"scheduled by the new leader {took_over_in:.1f}s after the kill")
