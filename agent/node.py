"""The node's lifecycle: registration and the heartbeat task.

The heartbeat runs in its own task on its own HTTP session from the agent's first second:
reconciles, pulls and watch streams cannot delay it (REFERENCE §10.13, §10.14). When the
server answers 404 (the node was deleted or the database was reset) the agent registers
again, with everything it knows about the machine.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

import caravanserai
from agent.runtime import EngineUnavailable, Runtime
from caravanserai.api import (
    AlreadyExists,
    CaravanseraiError,
    Conflict,
    Heartbeat,
    Node,
    NodeInfo,
    NodeNetwork,
    NodeSpec,
    NodeState,
    NotFound,
    ObjectMeta,
)
from caravanserai.api.quantities import format_cpus, parse_cpus, parse_memory
from caravanserai.client import CaravanseraiClient

log = structlog.get_logger("agent.node")

RETRY_MIN = 1.0
RETRY_MAX = 30.0


@dataclass(frozen=True)
class NodeFacts:
    """What the agent reports about its machine."""

    info: NodeInfo
    capacity: dict[str, str]
    network: NodeNetwork
    # What projects may request: capacity minus the operator's system reservation.
    allocatable: dict[str, str] | None = None


def allocatable_of(capacity: dict[str, str], reserved: dict[str, str]) -> dict[str, str]:
    """``capacity`` minus ``reserved`` (Kubernetes' --system-reserved), never below zero."""
    out = dict(capacity)
    if "cpu" in capacity and "cpu" in reserved:
        left = max(0.0, parse_cpus(capacity["cpu"]) - parse_cpus(reserved["cpu"]))
        out["cpu"] = format_cpus(left)
    if "memory" in capacity and "memory" in reserved:
        left_bytes = max(0, parse_memory(capacity["memory"]) - parse_memory(reserved["memory"]))
        out["memory"] = f"{left_bytes // 1024}Ki"
    return out


def os_image() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "PRETTY_NAME":
                return value.strip().strip('"') or None
    except OSError:
        pass
    return platform.platform() or None


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


async def gather_facts(
    runtime: Runtime,
    *,
    advertise_ip: str,
    agent_port: int | None,
    proxy_port: int | None,
    engine_deadline: float = 5.0,
    reserved: dict[str, str] | None = None,
    ingress_domain: str | None = None,
) -> NodeFacts:
    """Hostname, OS, kernel, Docker version and capacity (Docker's view when it answers)."""
    docker_version: str | None = None
    cpus: int | None = os.cpu_count()
    memory = memory_bytes()
    try:
        async with asyncio.timeout(engine_deadline):
            engine = await runtime.info()
        docker_version = engine.version or None
        cpus = engine.cpus or cpus
        memory = engine.memory_bytes or memory
    except (TimeoutError, EngineUnavailable, OSError) as exc:
        log.warning("docker engine info unavailable", error=str(exc))
    except Exception as exc:  # an odd engine answer must not stop registration
        log.warning("docker engine info failed", error=repr(exc))
    capacity: dict[str, str] = {}
    if cpus:
        capacity["cpu"] = str(cpus)
    if memory:
        capacity["memory"] = f"{memory // 1024}Ki"
    info = NodeInfo(
        hostname=socket.gethostname(),
        kernel_version=platform.release() or None,
        os_image=os_image(),
        architecture=platform.machine() or None,
        docker_version=docker_version,
        agent_version=caravanserai.__version__,
    )
    network = NodeNetwork(ip=advertise_ip, agent_port=agent_port, proxy_port=proxy_port,
                          ingress_domain=ingress_domain)
    return NodeFacts(info=info, capacity=capacity, network=network,
                     allocatable=allocatable_of(capacity, reserved or {}))


class NodeAgent:
    """Registers the node and keeps its heartbeat going until cancelled."""

    def __init__(
        self,
        client: CaravanseraiClient,
        node_name: str,
        facts: NodeFacts,
        *,
        interval: float,
        healthy: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.client = client
        self.healthy = healthy
        self.node_name = node_name
        self.facts = facts
        self.interval = interval
        self.registered = asyncio.Event()
        self.last_success: float | None = None
        self._last_state: NodeState | None = NodeState.READY

    def _full_heartbeat(self) -> Heartbeat:
        return Heartbeat(
            state=NodeState.READY,
            network=self.facts.network,
            capacity=self.facts.capacity,
            allocatable=(
                self.facts.allocatable if self.facts.allocatable is not None
                else self.facts.capacity
            ),
            info=self.facts.info,
        )

    async def register(self) -> None:
        """Create the Node, or update the one that exists, then send a full heartbeat."""
        hostname = self.facts.info.hostname
        node = Node(metadata=ObjectMeta(name=self.node_name), spec=NodeSpec(hostname=hostname))
        try:
            await self.client.nodes.create(node)
            log.info("node registered", node=self.node_name)
        except AlreadyExists:
            await self._refresh_spec(hostname)
            log.info("node already registered; updated", node=self.node_name)
        await self.client.nodes.heartbeat(self.node_name, self._full_heartbeat())
        self.registered.set()

    async def _refresh_spec(self, hostname: str | None) -> None:
        # Only the hostname is ours; an admin's ``unschedulable`` and labels stay.
        for _ in range(3):
            current = await self.client.nodes.get(self.node_name)
            if current.spec.hostname == hostname:
                return
            current.spec.hostname = hostname
            try:
                await self.client.nodes.update(current)
                return
            except Conflict:
                continue

    async def beat(self) -> None:
        """One heartbeat; re-registers when the server does not know the node."""
        state = NodeState.READY
        if self.healthy is not None and not await self.healthy():
            # Without its container engine the node cannot run anything: say so, so the
            # scheduler looks elsewhere (the heartbeat itself still proves the agent lives).
            state = NodeState.NOT_READY
        if state != self._last_state:
            log.info("node state", node=self.node_name, state=str(state))
            self._last_state = state
        try:
            await self.client.nodes.heartbeat(
                self.node_name, Heartbeat(state=state, network=self.facts.network)
            )
        except NotFound:
            log.warning("server does not know this node; registering again", node=self.node_name)
            self.registered.clear()
            await self.register()
        self.last_success = asyncio.get_running_loop().time()

    async def run(self) -> None:
        """Register at once, then beat every ``interval``; errors retry with backoff."""
        delay = RETRY_MIN
        while not self.registered.is_set():
            try:
                await self.register()
                self.last_success = asyncio.get_running_loop().time()
            except (CaravanseraiError, OSError) as exc:
                log.warning("registration failed; retrying", node=self.node_name,
                            error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.interval
        delay = RETRY_MIN
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                await self.beat()
                next_at += self.interval
                if next_at < loop.time():  # fell behind (suspended host): don't burst
                    next_at = loop.time() + self.interval
                delay = RETRY_MIN
            except (CaravanseraiError, OSError) as exc:
                retry = min(delay, self.interval)
                log.warning("heartbeat failed", node=self.node_name, error=str(exc),
                            retry_in=retry)
                next_at = loop.time() + retry
                delay = min(delay * 2, RETRY_MAX)
