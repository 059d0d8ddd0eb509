"""The Project resource: a Compose-like group of services that run together on one node."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from caravanserai.api.base import API_VERSION, Condition, ListMeta, ObjectMeta, Timestamp, WireModel


class ProjectPhase(StrEnum):
    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"


class VolumeType(StrEnum):
    EPHEMERAL = "Ephemeral"


class IngressScope(StrEnum):
    INTERNAL = "Internal"


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


class EnvVar(WireModel):
    name: str
    value: str = ""


class VolumeMount(WireModel):
    name: str
    mount_path: str


class PortMapping(WireModel):
    """A container port, optionally published on the node (as Compose ``ports``)."""

    container_port: int
    host_port: int | None = None
    protocol: Protocol = Protocol.TCP


class ServiceDef(WireModel):
    """One container of the project. Its name is its DNS hostname on the project network."""

    name: str
    image: str
    env: list[EnvVar] = Field(default_factory=list)
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    # Compose names: ``entrypoint`` overrides the image's ENTRYPOINT, ``command`` its CMD.
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    ports: list[PortMapping] = Field(default_factory=list)


class VolumeDef(WireModel):
    name: str
    type: VolumeType = VolumeType.EPHEMERAL


class IngressTarget(WireModel):
    service: str
    port: int


class IngressAccess(WireModel):
    scope: IngressScope = IngressScope.INTERNAL


class IngressDef(WireModel):
    name: str
    host: str
    target: IngressTarget
    access: IngressAccess = Field(default_factory=IngressAccess)


class ProjectSpec(WireModel):
    services: list[ServiceDef] = Field(default_factory=list)
    volumes: list[VolumeDef] = Field(default_factory=list)
    ingress: list[IngressDef] = Field(default_factory=list)
    expire_at: Timestamp | None = None


class ServiceStatus(WireModel):
    """What the agent observed of one service's container."""

    name: str
    container_id: str | None = None
    state: str | None = None  # Docker's state: created, running, exited, ...
    exit_code: int | None = None
    message: str | None = None


class PhaseTransition(WireModel):
    """One entry of the project's recent phase history (newest last)."""

    phase: ProjectPhase
    reason: str | None = None
    message: str | None = None
    time: Timestamp


class ProjectStatus(WireModel):
    phase: ProjectPhase | None = None
    node_ref: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    services: list[ServiceStatus] = Field(default_factory=list)
    history: list[PhaseTransition] = Field(default_factory=list)


class Project(WireModel):
    api_version: Literal["caravanserai/v1"] = API_VERSION
    kind: Literal["Project"] = "Project"
    metadata: ObjectMeta
    spec: ProjectSpec
    status: ProjectStatus = Field(default_factory=ProjectStatus)


class ProjectList(WireModel):
    api_version: Literal["caravanserai/v1"] = API_VERSION
    kind: Literal["ProjectList"] = "ProjectList"
    metadata: ListMeta
    items: list[Project]


# Phase condition reasons and condition types the control plane and agent write.
CONDITION_PHASE = "Phase"
CONDITION_CONTAINERS_RUNNING = "ContainersRunning"
CONDITION_NOT_READY_AT = "NotReadyAt"
CONDITION_TERMINATING_AT = "TerminatingAt"
