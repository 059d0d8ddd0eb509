"""An in-memory container engine for hollow nodes (``cara-agent --runtime=fake``).

The real agent — registration, heartbeat, node-scoped watch, informer, work queue,
reconciler, status writes, sweep — runs unchanged over it, so a simulated cluster loads the
control plane exactly as real nodes would, without Docker (Kubernetes' kubemark does the
same with hollow kubelets). Containers "start" after ``start_latency`` seconds and fail to
start with probability ``failure_rate`` (reason ``ContainerStartFailed``); everything else
(networks, volumes, images) succeeds at once. A running container stays running.

One instance per hollow node; thousands share one event loop (no threads, no sockets).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

from agent.desired import ContainerSpec
from agent.runtime import (
    ContainerEvent,
    ContainerInfo,
    ContainerStartFailed,
    EngineInfo,
    LabelledObject,
)


def _selected(labels: dict[str, str], want: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in want.items())


class FakeRuntime:
    """Implements ``agent.runtime.Runtime`` in memory."""

    def __init__(
        self,
        *,
        start_latency: float = 0.0,
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        self.start_latency = start_latency
        self.failure_rate = failure_rate
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.containers: dict[str, ContainerInfo] = {}  # id -> info
        self._names: dict[str, str] = {}  # name -> id
        self.networks: dict[str, dict[str, str]] = {}
        self.volumes: dict[str, dict[str, str]] = {}
        self.starts = 0
        self._subscribers: list[tuple[dict[str, str], asyncio.Queue[ContainerEvent]]] = []

    async def __aenter__(self) -> FakeRuntime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def info(self) -> EngineInfo:
        return EngineInfo(version="fake", api_version="1.45", os_image="hollow",
                          kernel_version=None, architecture="x86_64", cpus=4,
                          memory_bytes=8 << 30)

    async def ping(self) -> bool:
        return True

    # networks and volumes ---------------------------------------------------------------

    async def ensure_network(self, name: str, labels: dict[str, str]) -> dict[str, str]:
        return self.networks.setdefault(name, dict(labels))

    async def list_networks(self, labels: dict[str, str]) -> list[LabelledObject]:
        return [LabelledObject(n, dict(lb)) for n, lb in self.networks.items()
                if _selected(lb, labels)]

    async def remove_network(self, name: str) -> None:
        self.networks.pop(name, None)

    async def ensure_volume(self, name: str, labels: dict[str, str]) -> dict[str, str]:
        return self.volumes.setdefault(name, dict(labels))

    async def list_volumes(self, labels: dict[str, str]) -> list[LabelledObject]:
        return [LabelledObject(n, dict(lb)) for n, lb in self.volumes.items()
                if _selected(lb, labels)]

    async def remove_volume(self, name: str) -> None:
        self.volumes.pop(name, None)

    async def image_present(self, image: str) -> bool:
        return True  # always present

    async def ensure_image(self, image: str) -> bool:
        return False  # always present

    # containers ---------------------------------------------------------------------------

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return [c for c in self.containers.values() if _selected(c.labels, labels)]

    async def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        cid = self._names.get(name_or_id, name_or_id)
        return self.containers.get(cid)

    async def create_container(self, spec: ContainerSpec) -> str:
        cid = uuid.uuid4().hex
        self.containers[cid] = ContainerInfo(
            id=cid, name=spec.name, labels=dict(spec.labels), state="created",
            image=spec.image, ips={spec.network: "10.0.0.2"},
        )
        self._names[spec.name] = cid
        self._emit("create", cid)
        return cid

    async def start_container(self, container_id: str) -> None:
        if self.start_latency > 0:
            await self._sleep(self.start_latency)
        info = self.containers.get(container_id)
        if info is None:
            raise ContainerStartFailed(f"no such container {container_id}")
        self.starts += 1
        if self.failure_rate and self._rng.random() < self.failure_rate:
            self.containers[container_id] = replace(info, state="exited", exit_code=1,
                                                    error="simulated start failure")
            raise ContainerStartFailed("simulated start failure (hollow node)")
        self.containers[container_id] = replace(info, state="running", exit_code=None)
        self._emit("start", container_id)

    async def remove_container(self, container_id: str, *, stop_timeout: float) -> None:
        info = self.containers.pop(container_id, None)
        if info is not None:
            if self._names.get(info.name) == container_id:
                del self._names[info.name]
            self._emit("destroy", container_id, info.labels)

    # streams ------------------------------------------------------------------------------

    def _emit(self, action: str, cid: str, labels: dict[str, str] | None = None) -> None:
        if labels is None:
            labels = self.containers[cid].labels
        for want, queue in self._subscribers:
            if _selected(labels, want):
                queue.put_nowait(ContainerEvent(action, cid, dict(labels)))

    async def container_events(self, labels: dict[str, str]) -> AsyncIterator[ContainerEvent]:
        queue: asyncio.Queue[ContainerEvent] = asyncio.Queue()
        entry = (dict(labels), queue)
        self._subscribers.append(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(entry)

    async def logs(
        self, container_id: str, *, follow: bool, tail: str, timestamps: bool
    ) -> AsyncIterator[bytes]:
        if False:  # pragma: no cover - an empty async generator: hollow containers are silent
            yield b""
