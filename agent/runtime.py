"""What the agent needs from a container engine, as a protocol with plain data types.

``docker_runtime.DockerRuntime`` implements it with aiodocker; unit tests use fakes.
Failures the user can act on are ``RuntimeFailure``s carrying the condition reason the
project's status reports (``ImagePullFailed``, ``PortConflict``, ``VolumeError``, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from agent.desired import ContainerSpec
from agent.naming import LABEL_PROJECT, LABEL_SERVICE


class RuntimeFailure(Exception):
    """A Docker operation failed in a way that becomes the project's Failed reason."""

    reason = "ContainerCreateFailed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImagePullFailed(RuntimeFailure):
    reason = "ImagePullFailed"


class PortConflict(RuntimeFailure):
    reason = "PortConflict"


class VolumeError(RuntimeFailure):
    reason = "VolumeError"


class ContainerStartFailed(RuntimeFailure):
    reason = "ContainerStartFailed"


class NameConflict(RuntimeFailure):
    reason = "NameConflict"


class ResourceBusy(Exception):
    """A name is held by another node's copy of the project (both nodes share one engine
    and the other agent has not swept it yet): retry later, report nothing."""


class EngineUnavailable(Exception):
    """The engine did not answer (down, timeout): retry later, report nothing."""


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    labels: dict[str, str]
    state: str  # created, running, paused, restarting, removing, exited, dead
    exit_code: int | None = None
    error: str | None = None
    image: str | None = None
    # network name → IP address
    ips: dict[str, str] = field(default_factory=dict)
    oom_killed: bool = False
    # Docker's healthcheck state (starting, healthy, unhealthy), None without a healthcheck.
    health: str | None = None
    # When the container last exited (inspect only): tells one exit from the next.
    finished_at: str | None = None

    @property
    def project(self) -> str | None:
        return self.labels.get(LABEL_PROJECT)

    @property
    def service(self) -> str | None:
        return self.labels.get(LABEL_SERVICE)


@dataclass(frozen=True)
class LabelledObject:
    """A network or volume found by label."""

    name: str
    labels: dict[str, str]


@dataclass(frozen=True)
class ContainerEvent:
    action: str  # die, destroy, oom, start, ...
    container_id: str
    labels: dict[str, str]


@dataclass(frozen=True)
class EngineInfo:
    version: str
    api_version: str
    os_image: str | None
    kernel_version: str | None
    architecture: str | None
    cpus: int | None
    memory_bytes: int | None


class Runtime(Protocol):
    async def info(self) -> EngineInfo: ...

    async def ping(self) -> bool:
        """True when the engine answers (quickly)."""
        ...

    # networks
    async def ensure_network(self, name: str, labels: dict[str, str]) -> dict[str, str]:
        """Create the network unless it exists; return the labels of the one that exists."""
        ...

    async def list_networks(self, labels: dict[str, str]) -> list[LabelledObject]: ...
    async def remove_network(self, name: str) -> None: ...

    # volumes
    async def ensure_volume(self, name: str, labels: dict[str, str]) -> dict[str, str]:
        """Create the volume unless it exists (VolumeError on failure); return its labels."""
        ...

    async def list_volumes(self, labels: dict[str, str]) -> list[LabelledObject]: ...
    async def remove_volume(self, name: str) -> None: ...

    # images
    async def image_present(self, image: str) -> bool:
        """Whether the image is in the engine already (no pull needed)."""
        ...

    async def ensure_image(self, image: str) -> bool:
        """Pull the image unless present; True when a pull happened."""
        ...

    # containers
    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]: ...
    async def inspect_container(self, name_or_id: str) -> ContainerInfo | None: ...
    async def create_container(self, spec: ContainerSpec) -> str: ...
    async def start_container(self, container_id: str) -> None: ...
    async def remove_container(self, container_id: str, *, stop_timeout: float) -> None: ...

    # streams
    def container_events(self, labels: dict[str, str]) -> AsyncIterator[ContainerEvent]: ...
    def logs(
        self, container_id: str, *, follow: bool, tail: str, timestamps: bool
    ) -> AsyncIterator[bytes]: ...
