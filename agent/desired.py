"""The desired Docker objects of a project, computed from its spec (pure, no I/O).

Each container's configuration is hashed into the label ``cara.config-hash``: a spec update
recreates exactly the containers whose hash changed and leaves the others running.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from agent import naming
from caravanserai.api import Project, ServiceDef
from caravanserai.api.project import DependencyCondition, HealthCheck, RestartPolicy
from caravanserai.api.quantities import parse_cpus, parse_duration, parse_memory

# Bump when the way a service maps to a container changes, so that agents of a new version
# recreate containers built by an older layout instead of silently keeping them.
HASH_SCHEMA = 1


class SpecError(ValueError):
    """The spec cannot be turned into Docker objects (e.g. a mount of an undeclared volume)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class HostPolicy:
    """What this node allows and adds to every container (``cara-agent`` settings).

    ``reserved_ports``: the agent's own listeners (API, ingress proxy): a project publishing
    one would steal the node's control traffic. ``min_host_port``: lower host ports are
    refused (binding them is a privilege on Linux, and they are often the machine's own
    services) unless the project is in ``low_port_projects``. ``default_memory_bytes`` /
    ``default_pids_limit``: limits set on every container (None: Docker's unlimited).
    """

    reserved_ports: frozenset[int] = frozenset()
    min_host_port: int = 1024
    low_port_projects: frozenset[str] = frozenset()
    default_memory_bytes: int | None = None
    default_pids_limit: int | None = None


def with_node_defaults(
    limits: tuple[tuple[str, int], ...], policy: HostPolicy
) -> tuple[tuple[str, int], ...]:
    """The service's own limits, plus the node's defaults for those it does not set."""
    given = dict(limits)
    for key, default in (("Memory", policy.default_memory_bytes),
                         ("PidsLimit", policy.default_pids_limit)):
        if default is not None and key not in given:
            given[key] = default
    return tuple(given.items())


def check_host_ports(project: Project, policy: HostPolicy) -> None:
    """SpecError ``PortConflict`` for a published port this node does not allow (pure)."""
    name = project.metadata.name
    for svc in project.spec.services:
        for i, port in enumerate(svc.ports):
            host = port.host_port
            field = f"spec.services[{svc.name}].ports[{i}].hostPort"
            if host is None:
                continue
            if host in policy.reserved_ports:
                raise SpecError(
                    "PortConflict",
                    f"{field}: port {host} is one of the node agent's own listeners",
                )
            if host < policy.min_host_port and name not in policy.low_port_projects:
                raise SpecError(
                    "PortConflict",
                    f"{field}: port {host} is below this node's minimum host port "
                    f"{policy.min_host_port} (the node's CARA_MIN_HOST_PORT / "
                    "CARA_LOW_PORT_PROJECTS allow it)",
                )


@dataclass(frozen=True)
class PortSpec:
    container_port: int
    protocol: str
    host_port: int | None

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the agent sets on one service's container."""

    project: str
    service: str
    name: str
    image: str
    env: tuple[str, ...]
    command: tuple[str, ...] | None
    entrypoint: tuple[str, ...] | None
    mounts: tuple[tuple[str, str], ...]  # (docker volume name, mount path)
    ports: tuple[PortSpec, ...]
    network: str
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    config_hash: str = ""
    # Docker's HostConfig resource fields (NanoCpus, Memory, PidsLimit) and Healthcheck.
    limits: tuple[tuple[str, int], ...] = ()
    healthcheck: tuple[tuple[str, object], ...] | None = None
    # Agent decisions, not container configuration: changing them recreates nothing.
    restart: RestartPolicy = field(default=RestartPolicy.NO, compare=False)
    depends_on: tuple[tuple[str, DependencyCondition], ...] = field(default=(), compare=False)

    @property
    def has_healthcheck(self) -> bool:
        return self.healthcheck is not None and dict(self.healthcheck).get("Test") != ["NONE"]

    def create_config(self) -> dict[str, Any]:
        """The body of Docker's ``POST /containers/create``."""
        config: dict[str, Any] = {
            "Image": self.image,
            "Hostname": self.service[:63],
            "Env": list(self.env),
            "Labels": dict(self.labels),
            "HostConfig": {
                "NetworkMode": self.network,
                # No restart policy: an exited container is reported, not hidden (seeds:
                # Failed/ContainerExited); a spec update or delete+apply redeploys.
                # The agent applies the service's restart policy itself (with backoff and a
                # restartCount in status), so Docker must not restart behind its back.
                "RestartPolicy": {"Name": "no"},
                **dict(self.limits),
                # A process in the container cannot gain privileges (setuid binaries, file
                # capabilities) beyond those it started with.
                "SecurityOpt": ["no-new-privileges:true"],
                "Mounts": [
                    {"Type": "volume", "Source": src, "Target": dst} for src, dst in self.mounts
                ],
                "PortBindings": {
                    p.key: [{"HostPort": str(p.host_port)}]
                    for p in self.ports
                    if p.host_port is not None
                },
            },
            "NetworkingConfig": {"EndpointsConfig": {self.network: {"Aliases": [self.service]}}},
        }
        if self.ports:
            config["ExposedPorts"] = {p.key: {} for p in self.ports}
        if self.command is not None:
            config["Cmd"] = list(self.command)
        if self.entrypoint is not None:
            config["Entrypoint"] = list(self.entrypoint)
        if self.healthcheck is not None:
            config["Healthcheck"] = dict(self.healthcheck)
        return config


@dataclass(frozen=True)
class VolumeSpec:
    name: str  # docker volume name
    volume: str  # name in the spec
    labels: dict[str, str]


@dataclass(frozen=True)
class ProjectPlan:
    project: str
    uid: str | None
    network: str
    network_labels: dict[str, str]
    volumes: tuple[VolumeSpec, ...]
    containers: tuple[ContainerSpec, ...]


def config_hash(payload: dict[str, Any]) -> str:
    """A short, stable digest of a container's configuration."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def docker_limits(svc: ServiceDef) -> tuple[tuple[str, int], ...]:
    """``resources.limits`` as Docker HostConfig fields (validation checked the quantities)."""
    limits = svc.resources.limits if svc.resources else None
    if limits is None:
        return ()
    out: list[tuple[str, int]] = []
    if limits.cpus is not None:
        out.append(("NanoCpus", int(parse_cpus(limits.cpus) * 1e9)))
    if limits.memory is not None:
        out.append(("Memory", parse_memory(limits.memory)))
    if limits.pids is not None:
        out.append(("PidsLimit", limits.pids))
    return tuple(out)


def docker_healthcheck(check: HealthCheck | None) -> tuple[tuple[str, object], ...] | None:
    """Compose's healthcheck as Docker's ``Healthcheck`` (durations in nanoseconds)."""
    if check is None:
        return None
    out: list[tuple[str, object]] = [("Test", list(check.test))]
    for key, value in (
        ("Interval", check.interval), ("Timeout", check.timeout),
        ("StartPeriod", check.start_period),
    ):
        if value is not None:
            out.append((key, int(parse_duration(value) * 1e9)))
    if check.retries is not None:
        out.append(("Retries", check.retries))
    return tuple(out)


def _container_spec(
    project: str,
    svc: ServiceDef,
    volumes: dict[str, str],
    base_labels: dict[str, str],
    policy: HostPolicy,
) -> ContainerSpec:
    mounts: list[tuple[str, str]] = []
    for i, mount in enumerate(svc.volume_mounts):
        if mount.name not in volumes:
            raise SpecError(
                "VolumeError",
                f"spec.services[{svc.name}].volumeMounts[{i}]: volume {mount.name!r} "
                "is not declared in spec.volumes",
            )
        mounts.append((volumes[mount.name], mount.mount_path))
    ports = tuple(
        PortSpec(p.container_port, str(p.protocol.value), p.host_port) for p in svc.ports
    )
    spec = ContainerSpec(
        project=project,
        service=svc.name,
        name=naming.container_name(project, svc.name),
        image=svc.image,
        env=tuple(f"{e.name}={e.value}" for e in svc.env),
        command=tuple(svc.command) if svc.command is not None else None,
        entrypoint=tuple(svc.entrypoint) if svc.entrypoint is not None else None,
        mounts=tuple(mounts),
        ports=ports,
        network=naming.network_name(project),
        limits=with_node_defaults(docker_limits(svc), policy),
        healthcheck=docker_healthcheck(svc.healthcheck),
        restart=svc.restart or RestartPolicy.NO,
        depends_on=tuple((d.service, d.condition) for d in svc.depends_on or ()),
    )
    extra: dict[str, Any] = {}
    # Only set when used, so containers of services without them keep their hash.
    if spec.limits:
        extra["limits"] = spec.limits
    if spec.healthcheck is not None:
        extra["healthcheck"] = spec.healthcheck
    digest = config_hash(
        {
            "schema": HASH_SCHEMA,
            "image": spec.image,
            "env": spec.env,
            "command": spec.command,
            "entrypoint": spec.entrypoint,
            "mounts": spec.mounts,
            "ports": [(p.container_port, p.protocol, p.host_port) for p in spec.ports],
            "network": spec.network,
            "alias": spec.service,
            "security": ["no-new-privileges:true"],
            **extra,
        }
    )
    labels = {
        **base_labels,
        naming.LABEL_SERVICE: svc.name,
        naming.LABEL_CONFIG_HASH: digest,
    }
    return ContainerSpec(**{**spec.__dict__, "labels": labels, "config_hash": digest})


def plan_project(
    project: Project, node: str, policy: HostPolicy = HostPolicy()
) -> ProjectPlan:
    """The network, volumes and containers ``project`` needs on ``node``."""
    check_host_ports(project, policy)
    name = project.metadata.name
    uid = project.metadata.uid
    base = naming.project_labels(name, node, uid)
    volumes = {v.name: naming.volume_name(name, v.name) for v in project.spec.volumes}
    volume_specs = tuple(
        VolumeSpec(docker_name, v, {**base, naming.LABEL_VOLUME: v})
        for v, docker_name in volumes.items()
    )
    seen: set[str] = set()
    containers = []
    for svc in project.spec.services:
        if svc.name in seen:
            raise SpecError("InvalidSpec", f"service {svc.name!r} is defined twice")
        seen.add(svc.name)
        containers.append(_container_spec(name, svc, volumes, base, policy))
    return ProjectPlan(
        project=name,
        uid=uid,
        network=naming.network_name(name),
        network_labels=dict(base),
        volumes=volume_specs,
        containers=tuple(containers),
    )


def diff_services(
    plan: ProjectPlan, existing_hashes: dict[str, str | None]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Compare desired containers to existing ones (service → config hash, None if unknown).

    Returns (to_create, to_recreate, unchanged, to_remove): services without a container,
    services whose container has another hash, services that match, and containers of
    services the spec no longer has.
    """
    desired = {c.service: c.config_hash for c in plan.containers}
    create = [s for s in desired if s not in existing_hashes]
    recreate = [s for s in desired if s in existing_hashes and existing_hashes[s] != desired[s]]
    unchanged = [s for s in desired if s in existing_hashes and existing_hashes[s] == desired[s]]
    remove = [s for s in existing_hashes if s not in desired]
    return create, recreate, unchanged, remove
