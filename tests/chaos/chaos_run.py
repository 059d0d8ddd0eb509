"""The chaos run: a whole HA cluster under a steady workload while faults are injected,
then a checker that the final state is the intended one and every watch history is sound.

Used by ``tests/chaos/test_chaos.py`` (one round of every fault, a few minutes, in CI) and
by ``hack/bench/chaos.py --minutes N`` (rounds until the time is up). Nothing here is
pytest-specific except that the e2e helpers it reuses fail through ``pytest.fail``.

The cluster (all on 127.0.0.1):

    watchers, workload ─▶ HAProxy :api ─┬─▶ cara-server s0 ─┬─▶ PgBouncer (transaction) ─▶ primary
    agent n0 ─▶ HAProxy :fe_n0 ─────────┤                   │                                │ WAL
    agent n1 ─▶ HAProxy :fe_n1 ─────────┴─▶ cara-server s1 ─┴─ LISTEN, multi-host DSN ─▶ standby

Faults, one at a time, each followed by a wait for convergence (a write through the load
balancer succeeds and every project that should run is Running on a Ready node):

- ``server-kill``: SIGKILL one replica, start it again on the same port;
- ``pg-failover``: SIGKILL the primary's process group, promote the standby, point PgBouncer
  at it (what Patroni's callback or a VIP does), later re-clone a standby;
- ``pgbouncer-restart``: SIGKILL PgBouncer and start it again;
- ``agent-kill``: create a project, SIGKILL its agent as soon as it is Scheduled there
  (mid-reconcile), start the agent again;
- ``docker-restart``: stop a node's Docker engine (its containers die) and start it again;
- ``net-cut``: drop one agent's connections at the load balancer for longer than the
  heartbeat timeout plus the grace period, then let it back.

The checker (:func:`check`):

- every project that should exist exists and is Running on exactly one node, with its
  container running on that node's engine and on no other; every deleted project is gone
  from the API and from every engine; no container on any engine lacks a live owner;
- every watcher's history (several watchers, each listing, watching, resuming from its
  last revision after a dropped stream, relisting after a 410): within each list+watch
  segment revisions strictly increase, with no duplicate, and the set of Project
  revisions it saw equals the final database's log over the range it covered — no gap.
  The one expected exception: revisions a promoted asynchronous standby never received
  (above the revision the standby had at promotion). Events a watcher got at those
  revisions may differ from the new primary's; the watcher must then have ended that
  segment with a 410 and relisted, which the checker requires;
- no watcher stayed stale longer than ``stale_bound`` seconds: for every acknowledged
  write, the time until each watcher had seen its revision (by an event, a bookmark or a
  relist).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import random
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import psycopg
from agent_e2e_support import (
    BIN,
    BUSYBOX,
    REPO,
    AgentHandle,
    Agents,
    Process,
    _base_env,
    _wait_http,
    free_port,
)
from cluster_e2e_support import ServerHandle
from ha_components import HAProxy, PgBouncer, PgPair

from caravanserai.api import Expired, NodeState, NotFound, Project
from caravanserai.api.problems import AlreadyExists, CaravanseraiError, Conflict
from caravanserai.client import CaravanseraiClient
from caravanserai.client.errors import ClientError

FAULTS = ("server-kill", "pg-failover", "pgbouncer-restart", "agent-kill", "docker-restart",
          "net-cut")
HEARTBEAT_TIMEOUT = 3.0
RUNNING_GRACE = 3.0
SERVER_ENV = {
    "CARA_CONTROLLERS": "*",
    "CARA_LEADER_LEASE_DURATION": "3s",
    "CARA_LEADER_RENEW_DEADLINE": "2s",
    "CARA_LEADER_RETRY_PERIOD": "0.5s",
    "CARA_HEARTBEAT_TIMEOUT": f"{HEARTBEAT_TIMEOUT:g}s",
    "CARA_RUNNING_GRACE": f"{RUNNING_GRACE:g}s",
    "CARA_TERMINATING_TIMEOUT": "20s",
    "CARA_CONNECT_TIMEOUT": "3",
    "CARA_BOOKMARK_INTERVAL": "1",
    "CARA_SHUTDOWN_TIMEOUT": "2",
    # Open on loopback (anonymous acts as admin): faults are the subject, not authorization;
    # the agents still join and act with their node credentials.
    "CARA_INSECURE_ALLOW_ANONYMOUS": "true",
}


@dataclass
class ChaosConfig:
    workdir: Path
    docker_hosts: list[str]  # one node (agent) per engine
    # hack/docker-up.sh NAMEs of those engines that may be restarted ("" for one that may not)
    engine_names: list[str]
    pgbouncer_bin: str
    haproxy_bin: str
    rounds: int | None = 1  # rounds of every fault; None: until ``minutes`` are up
    minutes: float = 0.0
    max_projects: int = 6
    watchers: int = 3
    converge_within: float = 90.0
    stale_bound: float = 60.0
    seed: int = 17
    faults: tuple[str, ...] = FAULTS


@dataclass
class FaultRecord:
    name: str
    target: str
    started: float
    converged_after: float | None = None


@dataclass
class WatchSegment:
    """One list + watch (with resumes) of a watcher, until a relist or the end."""

    list_revision: int
    started: float
    events: list[tuple[int, str, str, float]] = field(default_factory=list)  # rev, name, type, t
    ended_by_410: bool = False
    resumes: int = 0


@dataclass
class Report:
    faults: list[FaultRecord] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    relists: int = 0
    resumes: int = 0
    max_stale: float = 0.0
    final_converge: float | None = None
    redeploys: Counter[str] = field(default_factory=Counter)  # Failed projects re-applied
    lost_acks: Counter[str] = field(default_factory=Counter)  # lost in async failover
    survived: list[tuple[float, int]] = field(default_factory=list)  # (time, standby rev)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        lines = ["", "== chaos run: faults", f"{'fault':<20}{'target':<24}{'converged after':>16}"]
        for f in self.faults:
            conv = "NOT" if f.converged_after is None else f"{f.converged_after:.1f}s"
            lines.append(f"{f.name:<20}{f.target:<24}{conv:>16}")
        by_kind = Counter(f.name for f in self.faults)
        lines.append("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items()))
                     + f" (total {len(self.faults)})")
        total = sum(self.requests.values())
        lines.append(f"requests made: {total} ("
                     + ", ".join(f"{k} {v}" for k, v in sorted(self.requests.items())) + ")")
        failed = sum(self.failures.values())
        lines.append(f"failed requests: {failed} ("
                     + (", ".join(f"{k} {v}" for k, v in sorted(self.failures.items()))
                        or "none") + ")")
        lines.append(f"watchers: {self.relists} relists after 410, {self.resumes} resumes "
                     f"after a dropped stream; worst staleness {self.max_stale:.1f}s")
        lines.append("acknowledged writes lost by an asynchronous failover (above what the "
                     "standby had; re-applied): "
                     + (", ".join(f"{k} {v}" for k, v in sorted(self.lost_acks.items()))
                        or "none"))
        if self.redeploys:
            lines.append("Failed projects re-applied by the workload (as a user would): "
                         + ", ".join(f"{k} {v}" for k, v in sorted(self.redeploys.items())))
        conv = "NOT" if self.final_converge is None else f"{self.final_converge:.1f}s"
        lines.append(f"final convergence after the last fault: {conv}; "
                     f"run took {self.duration / 60:.1f} min")
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(f"verdict: {verdict}")
        lines += [f"  - {p}" for p in self.problems[:40]]
        return "\n".join(lines)


def _reason(project: Project) -> str:
    """The reason of the project's latest phase transition (e.g. ContainerExited)."""
    history = project.status.history
    return (history[-1].reason if history else None) or str(project.status.phase)


def _bucket(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return type(exc).__name__
    if isinstance(exc, CaravanseraiError):
        return str(exc.status)
    return type(exc).__name__


class Chaos:
    """Builds the cluster, runs workload + faults, checks. Use :func:`run`."""

    def __init__(self, cfg: ChaosConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.report = Report()
        self.pair: PgPair | None = None
        self.bouncer: PgBouncer | None = None
        self.proxy: HAProxy | None = None
        self.servers: list[ServerHandle] = []
        self.server_ports: list[int] = []
        self.agents: list[AgentHandle] = []
        self.node_engine: dict[str, str] = {}
        self.api: CaravanseraiClient | None = None
        self.live: dict[str, int] = {}  # project -> spec generation we last wrote
        self.deleted: set[str] = set()
        self.acks: list[tuple[float, int]] = []  # (time, revision) of acknowledged writes
        self.stop = asyncio.Event()  # the workload
        self.watch_stop = asyncio.Event()
        self.quiet = asyncio.Lock()  # cordon/drain never overlaps a fault
        self.segments: list[list[WatchSegment]] = []
        self.seen: list[list[tuple[float, int]]] = []  # per watcher: (time, revision seen)
        self.counter = 0
        self.probed = False
        self.probe: str | None = None
        self.why = ""  # what the last convergence check found wrong
        # Per project: the revision of its last acknowledged create/update/delete.
        self.acked: dict[str, tuple[str, int]] = {}
        self.db = "cara"

    # -- set-up -----------------------------------------------------------------------------

    async def setup(self) -> None:
        cfg = self.cfg
        self.pair = await asyncio.to_thread(PgPair.start, cfg.workdir / "pg")
        with psycopg.connect(self.pair.admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.bouncer = PgBouncer(cfg.pgbouncer_bin, self.pair.base / "pgbouncer",
                                 self.pair.primary_port)
        await asyncio.to_thread(self.bouncer.start)
        self.server_ports = [free_port() for _ in range(2)]
        for i in range(2):
            self.servers.append(await self._start_server(i))
        nodes = [f"chaos-n{i}-{self.rng.randrange(16**4):04x}"
                 for i in range(len(cfg.docker_hosts))]
        self.proxy = HAProxy(cfg.haproxy_bin, cfg.workdir / "haproxy", self.server_ports,
                             agent_frontends=nodes)
        await asyncio.to_thread(self.proxy.start)
        self.api = CaravanseraiClient(self.proxy.url, timeout=10)
        for node, host in zip(nodes, cfg.docker_hosts, strict=True):
            pool = Agents(self.proxy.agent_url(node), host, cfg.workdir)
            self.node_engine[node] = host
            handle = await pool.start(NODE_NAME=node, AGENT_SWEEP_INTERVAL="3s",
                                      HEARTBEAT_INTERVAL="1s")
            handle.node = node
            self.agents.append(handle)
        await self._until(self._nodes_ready, 60, "nodes Ready")

    async def _start_server(self, i: int) -> ServerHandle:
        assert self.pair is not None and self.bouncer is not None
        env = SERVER_ENV | {
            "PORT": str(self.server_ports[i]),
            # The pool through the pooler, the listener direct to whichever host is primary.
            "CARA_LISTEN_DATABASE_URL": self.pair.multi_host_dsn(self.db),
        }
        return await _start_server_on(self.bouncer.dsn(self.db), self.cfg.workdir, f"s{i}", env)

    async def teardown(self) -> None:
        for a in self.agents:
            a.stop()
        for s in self.servers:
            s.stop()
        if self.api is not None:
            await self.api.close()
        for node, host in self.node_engine.items():
            with contextlib.suppress(Exception):
                async with aiodocker.Docker(url=host) as docker:
                    await _remove_all(docker, node)
        for part in (self.proxy, self.bouncer, self.pair):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()

    # -- helpers ----------------------------------------------------------------------------

    async def _until(self, probe: Any, within: float, what: str) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < within:
            try:
                if await probe():
                    return time.monotonic() - start
            except Exception as exc:
                self.why = f"{type(exc).__name__}: {str(exc)[:200]}"
            await asyncio.sleep(0.25)
        self.report.problems.append(
            f"timed out after {within:g}s waiting for {what} ({self.why or 'no reason'})")
        return None

    async def _nodes_ready(self) -> bool:
        assert self.api is not None
        nodes = {n.metadata.name: n for n in (await self.api.nodes.list()).items}
        return all(str(nodes[a.node].status.state) == "Ready" for a in self.agents
                   if a.node in nodes) and all(a.node in nodes for a in self.agents)

    async def _call(self, what: str, make: Any) -> Any:
        self.report.requests[what] += 1
        try:
            return await make()
        except (TimeoutError, CaravanseraiError, OSError) as exc:
            self.report.failures[f"{what} {_bucket(exc)}"] += 1
            raise

    def _ack(self, rv: str | None, name: str = "", op: str = "") -> None:
        if rv and rv.isdigit():
            self.acks.append((time.monotonic(), int(rv)))
            if name:
                self.acked[name] = (op, int(rv))

    # -- workload ---------------------------------------------------------------------------

    def _manifest(self, name: str, gen: int) -> dict[str, Any]:
        return {"apiVersion": "caravanserai/v1", "kind": "Project",
                "metadata": {"name": name, "labels": {"chaos": "yes"}},
                "spec": {"services": [{"name": "app", "image": BUSYBOX,
                                       "env": [{"name": "GEN", "value": str(gen)}]}]}}

    async def create(self, name: str | None = None) -> str:
        assert self.api is not None
        self.counter += 1
        name = name or f"chaos-{self.counter}"
        self.live[name] = 1
        for _ in range(100):
            try:
                p = await self._call("create", lambda: self.api.projects.create(  # type: ignore[union-attr]
                    self._manifest(name, 1)))
                self._ack(p.metadata.resource_version, name, "create")
                return name
            except AlreadyExists:
                return name  # an earlier attempt that got a 503 did commit: exactly once
            except (TimeoutError, CaravanseraiError, OSError):
                await asyncio.sleep(0.3)
        self.report.problems.append(f"could not create {name}")
        return name

    async def update(self, name: str) -> None:
        assert self.api is not None
        for _ in range(50):
            try:
                p = await self._call("get", lambda: self.api.projects.get(name))  # type: ignore[union-attr]
                if p.metadata.deletion_timestamp is not None:
                    return
                gen = self.live[name] + 1
                body = self._manifest(name, gen)
                body["metadata"]["resourceVersion"] = p.metadata.resource_version
                updated = await self._call(
                    "update", lambda body=body: self.api.projects.update(body))  # type: ignore[union-attr]
                self.live[name] = gen
                self._ack(updated.metadata.resource_version, name, "update")
                return
            except Conflict:
                continue  # re-read and retry: an update by resourceVersion is idempotent
            except NotFound:
                return
            except (TimeoutError, CaravanseraiError, OSError):
                await asyncio.sleep(0.3)

    async def delete(self, name: str) -> None:
        assert self.api is not None
        self.live.pop(name, None)
        self.deleted.add(name)
        for _ in range(100):
            try:
                gone = await self._call("delete", lambda: self.api.projects.delete(name))  # type: ignore[union-attr]
                if gone is not None:
                    self._ack(gone.metadata.resource_version, name, "delete")
                return
            except NotFound:
                return
            except (TimeoutError, CaravanseraiError, OSError):
                await asyncio.sleep(0.3)

    async def cordon(self) -> None:
        """Drain a node for a moment (no new projects there), then make it Ready again."""
        assert self.api is not None
        node = self.rng.choice(self.agents).node
        async with self.quiet:
            for state in (NodeState.DRAINING, NodeState.READY):
                for _ in range(50):
                    try:
                        n = await self._call("get", lambda: self.api.nodes.get(node))  # type: ignore[union-attr]
                        n.status.state = state
                        await self._call("cordon", lambda n=n: self.api.nodes.update_status(n))  # type: ignore[union-attr]
                        break
                    except (TimeoutError, CaravanseraiError, OSError):
                        await asyncio.sleep(0.2)
                await asyncio.sleep(1.0)

    async def workload(self) -> None:
        while not self.stop.is_set():
            roll = self.rng.random()
            if len(self.live) < 2 or (roll < 0.35 and len(self.live) < self.cfg.max_projects):
                await self.create()
            elif roll < 0.65 and self.live:
                await self.update(self.rng.choice(sorted(self.live)))
            elif roll < 0.9 and self.live:
                await self.delete(self.rng.choice(sorted(self.live)))
            else:
                await self.cordon()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.7)

    # -- watchers ---------------------------------------------------------------------------

    async def watcher(self, i: int) -> None:
        """List, watch, resume from the last revision when the stream drops, relist on 410."""
        assert self.proxy is not None
        segments: list[WatchSegment] = []
        seen: list[tuple[float, int]] = []
        self.segments.append(segments)
        self.seen.append(seen)
        async with CaravanseraiClient(self.proxy.url, timeout=10,
                                      watch_read_timeout=15) as api:
            while not self.watch_stop.is_set():
                try:
                    listed = await api.projects.list()
                except (TimeoutError, CaravanseraiError, OSError):
                    await asyncio.sleep(0.3)
                    continue
                seg = WatchSegment(int(listed.resource_version), time.monotonic())
                segments.append(seg)
                seen.append((time.monotonic(), seg.list_revision))
                rv = listed.resource_version
                while not self.watch_stop.is_set():
                    try:
                        async for ev in api.projects.watch(rv, timeout_seconds=60):
                            now = time.monotonic()
                            if ev.error is not None:
                                if isinstance(ev.error, Expired):
                                    seg.ended_by_410 = True
                                break
                            rv = ev.resource_version
                            seen.append((now, int(rv)))
                            if ev.object is not None:
                                seg.events.append((int(rv), ev.object.metadata.name,
                                                   str(ev.type), now))
                            if self.watch_stop.is_set():
                                break
                    except (TimeoutError, CaravanseraiError, OSError):
                        await asyncio.sleep(0.2)
                    if seg.ended_by_410:
                        self.report.relists += 1
                        break
                    seg.resumes += 1
                    self.report.resumes += 1

    # -- faults -----------------------------------------------------------------------------

    async def inject(self, fault: str) -> FaultRecord:
        assert self.pair and self.bouncer and self.proxy
        start = time.monotonic()
        if fault == "server-kill":
            i = self.rng.randrange(len(self.servers))
            rec = FaultRecord(fault, self.servers[i].name, start)
            self.servers[i].kill()
            await asyncio.sleep(1.0)
            self.servers[i] = await self._start_server(i)
        elif fault == "pg-failover":
            rec = FaultRecord(fault, f"primary {self.pair.primary}", start)
            survived = await asyncio.to_thread(self._standby_revision)
            await asyncio.to_thread(self.pair.kill_primary)
            # Anything committed after the read above and before the kill is what an
            # asynchronous standby may lack; read it again from the standby at promotion.
            survived = await asyncio.to_thread(self._standby_revision) or survived
            self.report.survived.append((time.monotonic(), survived or 0))
            await asyncio.to_thread(self.pair.promote)
            await asyncio.to_thread(self.bouncer.retarget, self.pair.primary_port)
        elif fault == "pgbouncer-restart":
            rec = FaultRecord(fault, "pgbouncer", start)
            await asyncio.to_thread(self.bouncer.restart)
        elif fault == "agent-kill":
            rec = await self._agent_kill(start)
        elif fault == "docker-restart":
            # Only engines private to this run (not one the rest of a test session uses).
            names = [n for n in self.cfg.engine_names if n]
            name = self.rng.choice(names)
            rec = FaultRecord(fault, name, start)
            await asyncio.to_thread(_restart_engine, name)
        elif fault == "net-cut":
            agent = self.rng.choice(self.agents)
            rec = FaultRecord(fault, agent.node, start)
            self.proxy.cut(agent.node)
            # Longer than the heartbeat timeout plus the grace period: its projects move.
            await asyncio.sleep(HEARTBEAT_TIMEOUT + RUNNING_GRACE + 4.0)
            self.proxy.heal(agent.node)
        else:
            raise ValueError(fault)
        return rec

    def _standby_revision(self) -> int | None:
        assert self.pair is not None
        try:
            with psycopg.connect(host="127.0.0.1", port=self.pair.port(self.pair.standby),
                                 user="postgres", dbname=self.db, connect_timeout=2) as conn:
                row = conn.execute("SELECT rev FROM cara_revision").fetchone()
                return int(row[0]) if row else None
        except psycopg.Error:
            return None

    async def _agent_kill(self, start: float) -> FaultRecord:
        assert self.api is not None
        name = await self.create()
        node = None
        for _ in range(200):
            with contextlib.suppress(CaravanseraiError, OSError, asyncio.TimeoutError):
                node = (await self.api.projects.get(name)).status.node_ref
            if node:
                break
            await asyncio.sleep(0.05)
        agent = next((a for a in self.agents if a.node == node), self.agents[0])
        agent.kill()  # its reconcile of `name` is starting or half done
        await asyncio.sleep(1.0)
        await agent.start_again()
        return FaultRecord("agent-kill", agent.node, start)

    async def reapply_lost(self) -> None:
        """After a promotion: acknowledged writes the standby never received are gone (that
        is asynchronous replication). Only writes above the revision the standby had may be;
        a lost one below it is a bug. The user's recovery, and ours: apply them again."""
        assert self.api is not None
        survived = self.report.survived[-1][1]
        for name, gen in list(self.live.items()):
            op, rev = self.acked.get(name, ("", 0))
            try:
                p = await self.api.projects.get(name)
            except NotFound:
                p = None
            except (CaravanseraiError, OSError, TimeoutError):
                continue
            env = {} if p is None else {e.name: e.value for e in p.spec.services[0].env}
            if p is not None and env.get("GEN") == str(gen):
                continue
            if rev <= survived:
                self.report.problems.append(
                    f"{op} of {name} acknowledged at revision {rev} <= {survived} (what the "
                    "promoted standby had) was lost")
            self.report.lost_acks[op or "?"] += 1
            if p is None:
                self.live.pop(name)
                await self.create(name)
                self.live[name] = 1
            else:
                self.live[name] = int(env.get("GEN") or 1)
                await self.update(name)
        for name in sorted(self.deleted):
            op, rev = self.acked.get(name, ("", 0))
            with contextlib.suppress(CaravanseraiError, OSError, TimeoutError):
                p = await self.api.projects.get(name)
                if p.metadata.deletion_timestamp is None and op == "delete":
                    if rev <= survived:
                        self.report.problems.append(
                            f"delete of {name} acknowledged at revision {rev} <= {survived} "
                            "was lost")
                    self.report.lost_acks["delete"] += 1
                    await self.delete(name)

    async def converged(self) -> bool:
        """A write succeeds and every project that should run is Running on a Ready node."""
        assert self.api is not None
        if not self.probed:  # one write per convergence wait, not one per poll
            if self.probe is None:
                self.probe = f"probe-{self.rng.randrange(16**6):06x}"
                self.deleted.add(self.probe)  # checked like any deleted project
            self.why = "the probe write failed"
            # Create then delete, both retried until they answer (idempotently).
            with contextlib.suppress(AlreadyExists):
                await self.api.projects.create(self._manifest(self.probe, 1))
            with contextlib.suppress(NotFound):
                await self.api.projects.delete(self.probe)
            self.probed, self.probe = True, None
        if not await self._nodes_ready():
            self.why = "a node is not Ready"
            return False
        projects = {p.metadata.name: p for p in (await self.api.projects.list()).items}
        ok = True
        for name in list(self.live):
            p = projects.get(name)
            if p is not None and str(p.status.phase) == "Failed":
                # A Docker engine restart kills the containers, and the agent creates them
                # with restart policy "no" (the seeds: a Failed project stays Failed until
                # the user redeploys). The user's move, and ours: re-apply the spec.
                self.report.redeploys[_reason(p)] += 1
                await self.update(name)
            if p is None or str(p.status.phase) != "Running":
                self.why = (f"project {name} is "
                            f"{'missing' if p is None else p.status.phase}")
                ok = False
        return ok

    async def faults(self) -> None:
        cfg = self.cfg
        deadline = time.monotonic() + cfg.minutes * 60
        rounds = 0
        await asyncio.sleep(3.0)  # the workload gets going first
        while True:
            order = list(cfg.faults)
            self.rng.shuffle(order)
            for fault in order:
                async with self.quiet:
                    rec = await self.inject(fault)
                    self.report.faults.append(rec)
                    self.probed = False
                    rec.converged_after = await self._until(
                        self.converged, cfg.converge_within, f"convergence after {fault}")
                    if rec.converged_after is not None:  # measured from the fault's start
                        rec.converged_after = time.monotonic() - rec.started
                    if fault == "pg-failover":
                        assert self.pair is not None
                        await self.reapply_lost()
                        await asyncio.to_thread(self.pair.rebuild_standby)
                await asyncio.sleep(1.0)
            rounds += 1
            if cfg.rounds is not None and rounds >= cfg.rounds:
                return
            if cfg.rounds is None and time.monotonic() > deadline:
                return

    # -- the checker ------------------------------------------------------------------------

    async def check_final_state(self) -> None:
        """Wait for the intended final state; record what is still wrong after the bound."""
        start = time.monotonic()
        final = await self._until(self._final_state_ok, self.cfg.converge_within,
                                  "the final state")
        self.report.final_converge = None if final is None else time.monotonic() - start
        if final is None:
            self.report.problems.extend(await self._final_state_problems())

    def check_histories(self) -> None:
        problems = self.report.problems
        problems.extend(self._history_problems())
        self.report.max_stale = self._staleness()
        if self.report.max_stale > self.cfg.stale_bound:
            problems.append(f"a watcher was stale for {self.report.max_stale:.1f}s "
                            f"(bound {self.cfg.stale_bound:g}s)")

    async def _final_state_ok(self) -> bool:
        return await self.converged() and not await self._final_state_problems()

    async def _final_state_problems(self) -> list[str]:
        assert self.api is not None
        out: list[str] = []
        projects = {p.metadata.name: p for p in (await self.api.projects.list()).items}
        containers: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for node, host in self.node_engine.items():
            async with aiodocker.Docker(url=host) as docker:
                data = await docker._query_json("containers/json", params={
                    "all": True, "filters": json.dumps({"label": ["cara.project"]})})
            for c in data:
                project = c["Labels"].get("cara.project", "")
                if project.startswith("chaos-") or project.startswith("probe-"):
                    containers[project].append((node, c["State"], c["Names"][0]))
        for name, gen in self.live.items():
            p = projects.get(name)
            if p is None:
                out.append(f"project {name} should exist and does not")
                continue
            if str(p.status.phase) != "Running":
                out.append(f"project {name} is {p.status.phase} ({_reason(p)}), not Running")
            running = [c for c in containers.get(name, []) if c[1] == "running"]
            if [c[0] for c in running] != [p.status.node_ref]:
                out.append(f"project {name} on {p.status.node_ref} has running containers "
                           f"{running}")
            env = {e.name: e.value for e in p.spec.services[0].env}
            if env.get("GEN") != str(gen):
                out.append(f"project {name}: spec GEN={env.get('GEN')} != intended {gen}")
        for name in self.deleted:
            if name in projects:
                out.append(f"deleted project {name} still exists "
                           f"({projects[name].status.phase})")
        for project, cs in containers.items():
            if project not in self.live:
                out.append(f"orphaned containers of {project}: {cs}")
        return out

    def _history_problems(self) -> list[str]:
        assert self.pair is not None
        with psycopg.connect(self.pair.admin_dsn(self.db), connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT revision, name, type FROM cara_events WHERE kind = 'Project' "
                "ORDER BY revision").fetchall()
        log = {int(r[0]): (r[1], r[2]) for r in rows}
        out: list[str] = []
        for w, segments in enumerate(self.segments):
            for s, seg in enumerate(segments):
                revs = [e[0] for e in seg.events]
                if any(b <= a for a, b in itertools.pairwise(revs)):
                    out.append(f"watcher {w} segment {s}: revisions out of order or "
                               f"duplicated: {revs[:50]}")
                if not revs:
                    continue
                last = revs[-1]
                # Revisions the segment saw that the final database does not hold as such:
                # allowed only above what a promoted standby had, in a segment that then
                # ended with a 410.
                lost = [e for e in seg.events if log.get(e[0]) != (e[1], e[2])]
                # Failovers during this segment, with what their promoted standby had.
                spans = [sv for when, sv in self.report.survived if seg.started <= when]
                for rev, name, type_, _ in lost:
                    if not (seg.ended_by_410 and any(rev > sv for sv in spans)):
                        out.append(f"watcher {w} segment {s}: revision {rev} {type_} {name} "
                                   "is not in the database's history")
                bound = min([last, *spans]) if seg.ended_by_410 else last
                expected = {r for r in log if seg.list_revision < r <= bound}
                got = {e[0] for e in seg.events if e[0] <= bound}
                if missing := sorted(expected - got):
                    out.append(f"watcher {w} segment {s}: gap, missed revisions {missing[:20]}")
        return out

    def _staleness(self) -> float:
        """The longest time from an acknowledged write to a watcher having seen it."""
        worst = 0.0
        for seen in self.seen:
            times = [t for t, _ in seen]
            highest = list(itertools.accumulate((r for _, r in seen), max))
            for t_ack, rev in self.acks:
                j = bisect.bisect_left(highest, rev)
                if j < len(seen):
                    worst = max(worst, times[j] - t_ack)
        return worst


async def _start_server_on(dsn: str, workdir: Path, name: str,
                           env: dict[str, str]) -> ServerHandle:
    """``cara-server`` on the port in ``env`` (a restart keeps its load-balancer slot)."""
    port = int(env["PORT"])
    full_env = _base_env() | {"DATABASE_URL": dsn, "HOST": "127.0.0.1"} | env
    proc = Process(name, [str(BIN / "cara-server")], full_env, workdir / f"{name}.log", workdir)
    proc.start()
    handle = ServerHandle(name, port, proc)
    try:
        await _wait_http(handle.url + "/api/healthz", proc)
    except BaseException:
        proc.stop()
        raise
    return handle


async def _remove_all(docker: aiodocker.Docker, node: str) -> None:
    from agent_e2e_support import remove_node_objects

    await remove_node_objects(docker, node)


def _restart_engine(name: str) -> None:
    """Stop the Docker engine (its containers die) and start it again."""
    subprocess.run([str(REPO / "hack" / "docker-down.sh"), name], check=True,
                   capture_output=True, timeout=180)
    subprocess.run([str(REPO / "hack" / "docker-up.sh"), name], check=True,
                   capture_output=True, timeout=300)


async def run(cfg: ChaosConfig) -> Report:
    """Build the cluster, run workload + watchers + the fault schedule, check, tear down."""
    chaos = Chaos(cfg)
    began = time.monotonic()
    try:
        await chaos.setup()
        tasks = [asyncio.create_task(chaos.watcher(i)) for i in range(cfg.watchers)]
        workload = asyncio.create_task(chaos.workload())
        try:
            await chaos.faults()
        finally:
            chaos.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(workload, 60)
        await chaos.check_final_state()
        chaos.watch_stop.set()
        await asyncio.wait(tasks, timeout=10)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        chaos.check_histories()
    finally:
        chaos.report.duration = time.monotonic() - began
        await chaos.teardown()
    return chaos.report
