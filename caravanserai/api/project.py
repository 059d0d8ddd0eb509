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


class RestartPolicy(StrEnum):
    """Compose's ``restart``: what the agent does when a service's container exits."""

    NO = "no"
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    UNLESS_STOPPED = "unless-stopped"


class DependencyCondition(StrEnum):
    """Compose's ``depends_on.condition``: when a dependency counts as ready."""

    SERVICE_STARTED = "service_started"
    SERVICE_HEALTHY = "service_healthy"
    SERVICE_COMPLETED_SUCCESSFULLY = "service_completed_successfully"


class HealthCheck(WireModel):
    """Compose's ``healthcheck``, run by Docker inside the container.

    ``test`` is ``["CMD", exe, args...]``, ``["CMD-SHELL", "command"]`` or ``["NONE"]``;
    durations are Compose's (``"10s"``, ``"1m30s"``).
    """

    test: list[str]
    interval: str | None = None
    timeout: str | None = None
    retries: int | None = None
    start_period: str | None = None


class ServiceDependency(WireModel):
    """One entry of ``dependsOn``: start this service once ``service`` meets ``condition``."""

    service: str
    condition: DependencyCondition = DependencyCondition.SERVICE_STARTED


class ResourceLimits(WireModel):
    """Hard limits applied to the container (``docker run --cpus --memory --pids-limit``)."""

    cpus: float | str | None = None
    memory: int | str | None = None
    pids: int | None = None


class ResourceRequests(WireModel):
    """What the scheduler reserves on the node for this service."""

    cpus: float | str | None = None
    memory: int | str | None = None


class Resources(WireModel):
    """Compose's ``deploy.resources``: limits enforced by Docker, requests for scheduling.

    Memory is ``512Mi``/``1Gi`` (or ``512m``/``1g``, bytes as a number); CPUs ``0.5``/``"500m"``.
    """

    limits: ResourceLimits | None = None
    requests: ResourceRequests | None = None


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
    # Compose names and defaults: "no" keeps an exited container exited (Failed).
    # Unset means "no" (Compose's default): an exited container leaves the project Failed.
    restart: RestartPolicy | None = None
    healthcheck: HealthCheck | None = None
    depends_on: list[ServiceDependency] | None = None
    resources: Resources | None = None


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
    # Times the agent restarted the container under the service's restart policy.
    restart_count: int | None = None
    # Docker's health of a service with a healthcheck: starting, healthy or unhealthy.
    health: str | None = None
    ready: bool | None = None


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
# True when every service runs and every service with a healthcheck is healthy.
CONDITION_PROJECT_READY = "Ready"
CONDITION_SCHEDULED = "Scheduled"
