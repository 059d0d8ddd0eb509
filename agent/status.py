"""From what Docker shows to what the project's status says (pure, no I/O).

Running  + ``ContainersRunning=True``  (reason ``ContainersRunning``): every service runs.
Failed   + ``ContainersRunning=False``: a failure (``ImagePullFailed``, ``PortConflict``,
         ``VolumeError``, ...) or a container that exited (``ContainerExited``).
Otherwise the project is still starting: the phase stays, nothing is claimed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.ordering import REASON_WAITING
from agent.restarts import REASON_BACKOFF, BackOff
from agent.runtime import ContainerInfo
from caravanserai.api import (
    CONDITION_CONTAINERS_RUNNING,
    CONDITION_PHASE,
    Condition,
    ConditionStatus,
    ProjectPhase,
    ProjectStatus,
    ServiceStatus,
    set_condition,
)
from caravanserai.api.project import CONDITION_PROJECT_READY

REASON_RUNNING = "ContainersRunning"
REASON_EXITED = "ContainerExited"
REASON_STARTING = "ContainersStarting"
REASON_REMOVED = "ResourcesRemoved"
REASON_READY = "ServicesReady"
REASON_NOT_READY = "ServicesNotReady"

_ORDER = {"ImagePullFailed": 0, "VolumeError": 1, "PortConflict": 2}


@dataclass(frozen=True)
class Failure:
    """A failure met while converging one service (or the project, service None)."""

    reason: str
    message: str
    service: str | None = None


@dataclass(frozen=True)
class ServiceContext:
    """What the agent knows of the services beyond Docker's view: the restart policy's
    backoffs and counts, services waiting for dependencies, which have healthchecks, and
    which are expected to run to completion (exit 0 is their success)."""

    backoffs: Mapping[str, BackOff] = field(default_factory=dict)
    restart_counts: Mapping[str, int] = field(default_factory=dict)
    waiting: Mapping[str, str] = field(default_factory=dict)
    healthchecked: frozenset[str] = frozenset()
    completes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Observation:
    """The verdict on a project: phase (None: keep the current one) and the condition."""

    phase: ProjectPhase | None
    condition: Condition
    services: list[ServiceStatus]
    ready: Condition | None = None
    # Worth a status write although not settled (a service waits for its dependencies).
    waiting: bool = False

    @property
    def settled(self) -> bool:
        return self.phase is not None


def service_ready(status: ServiceStatus) -> bool:
    """Running, and healthy when it has a healthcheck: may receive traffic."""
    return status.state == "running" and status.health in (None, "healthy")


def service_statuses(
    services: Sequence[str],
    containers: Mapping[str, ContainerInfo | None],
    failures: Sequence[Failure] = (),
    context: ServiceContext | None = None,
) -> list[ServiceStatus]:
    ctx = context or ServiceContext()
    by_service = {f.service: f for f in failures if f.service}
    out = []
    for name in services:
        info = containers.get(name)
        failure = by_service.get(name)
        message = failure.message if failure else None
        restarts = ctx.restart_counts.get(name) or None
        if name in ctx.waiting and (info is None or info.state == "created"):
            out.append(ServiceStatus(name=name, state="waiting", message=ctx.waiting[name],
                                     restart_count=restarts, ready=False))
            continue
        if info is None:
            out.append(ServiceStatus(name=name, state="missing", message=message,
                                     restart_count=restarts))
            continue
        if info.state in ("exited", "dead") and message is None:
            message = f"exited with code {info.exit_code}"
            if info.oom_killed:
                message += " (out of memory)"
            if info.error:
                message += f": {info.error}"
            if name in ctx.backoffs:
                message = ctx.backoffs[name].message
        health = info.health if name in ctx.healthchecked else None
        status = ServiceStatus(
            name=name,
            container_id=info.id[:12],
            state=info.state,
            exit_code=info.exit_code,
            message=message,
            restart_count=restarts,
            health=health,
        )
        status.ready = service_ready(status)
        out.append(status)
    return out


def _readiness(statuses: Sequence[ServiceStatus], completes: frozenset[str]) -> Condition:
    pending = [
        s for s in statuses
        if not s.ready and not (s.name in completes and s.exit_code == 0)
    ]
    if not pending:
        return Condition(type=CONDITION_PROJECT_READY, status=ConditionStatus.TRUE,
                         reason=REASON_READY, message="all services ready")

    def why(s: ServiceStatus) -> str:
        return f"health: {s.health}" if s.state == "running" and s.health else str(s.state)

    detail = ", ".join(f"{s.name} ({why(s)})" for s in pending)
    return Condition(type=CONDITION_PROJECT_READY, status=ConditionStatus.FALSE,
                     reason=REASON_NOT_READY, message=f"not ready: {detail}")


def observe(
    services: Sequence[str],
    containers: Mapping[str, ContainerInfo | None],
    failures: Sequence[Failure] = (),
    context: ServiceContext | None = None,
) -> Observation:
    """The status of a project whose services are ``services`` (in spec order)."""
    ctx = context or ServiceContext()
    statuses = service_statuses(services, containers, failures, ctx)
    ready = _readiness(statuses, ctx.completes)
    if failures:
        ordered = sorted(failures, key=lambda f: _ORDER.get(f.reason, 9))
        first = ordered[0]
        message = "; ".join(dict.fromkeys(f.message for f in ordered))
        return Observation(
            ProjectPhase.FAILED,
            Condition(
                type=CONDITION_CONTAINERS_RUNNING,
                status=ConditionStatus.FALSE,
                reason=first.reason,
                message=message,
            ),
            statuses,
            ready,
        )
    exited = [
        s for s in statuses
        if s.state in ("exited", "dead")
        and s.name not in ctx.backoffs
        and not (s.name in ctx.completes and s.exit_code == 0)
    ]
    if exited:
        detail = ", ".join(f"{s.name} (exit code {s.exit_code})" for s in exited)
        return Observation(
            ProjectPhase.FAILED,
            Condition(
                type=CONDITION_CONTAINERS_RUNNING,
                status=ConditionStatus.FALSE,
                reason=REASON_EXITED,
                message=f"container exited: {detail}",
            ),
            statuses,
            ready,
        )
    waiting = [s for s in statuses if s.state == "waiting"]
    if waiting:
        return Observation(
            None,
            Condition(
                type=CONDITION_CONTAINERS_RUNNING,
                status=ConditionStatus.FALSE,
                reason=REASON_WAITING,
                message="; ".join(f"{s.name}: {s.message}" for s in waiting),
            ),
            statuses,
            ready,
            waiting=True,
        )
    backing_off = [s for s in statuses if s.name in ctx.backoffs and s.state != "running"]
    done = [s for s in statuses if s.name in ctx.completes and s.exit_code == 0]
    if statuses and all(s.state == "running" or s in backing_off or s in done
                        for s in statuses):
        if backing_off:
            return Observation(
                ProjectPhase.RUNNING,
                Condition(
                    type=CONDITION_CONTAINERS_RUNNING,
                    status=ConditionStatus.FALSE,
                    reason=REASON_BACKOFF,
                    message="; ".join(s.message or s.name for s in backing_off),
                ),
                statuses,
                ready,
            )
        n = len(statuses)
        return Observation(
            ProjectPhase.RUNNING,
            Condition(
                type=CONDITION_CONTAINERS_RUNNING,
                status=ConditionStatus.TRUE,
                reason=REASON_RUNNING,
                message="1 container running" if n == 1 else f"all {n} containers running",
            ),
            statuses,
            ready,
        )
    starting = ", ".join(f"{s.name} ({s.state})" for s in statuses if s.state != "running")
    return Observation(
        None,
        Condition(
            type=CONDITION_CONTAINERS_RUNNING,
            status=ConditionStatus.FALSE,
            reason=REASON_STARTING,
            message=f"waiting for: {starting}",
        ),
        statuses,
        ready,
    )


def apply_observation(
    status: ProjectStatus, obs: Observation, generation: int | None
) -> ProjectStatus | None:
    """The new status with ``obs`` applied, or None when nothing would change."""
    new = status.model_copy(deep=True)
    if obs.phase is not None and obs.phase != status.phase:
        new.phase = obs.phase
        # The Phase condition is the changelog of transitions: say why this one happened.
        set_condition(
            new.conditions,
            Condition(
                type=CONDITION_PHASE,
                status=ConditionStatus.TRUE,
                reason=obs.condition.reason,
                message=obs.condition.message,
            ),
        )
    set_condition(new.conditions, obs.condition)
    if obs.ready is not None:
        set_condition(new.conditions, obs.ready)
    new.services = obs.services
    if generation is not None and obs.settled:
        new.observed_generation = generation
    return None if new == status else new


def terminated_status(status: ProjectStatus) -> ProjectStatus:
    new = status.model_copy(deep=True)
    new.phase = ProjectPhase.TERMINATED
    set_condition(
        new.conditions,
        Condition(
            type=CONDITION_PHASE,
            status=ConditionStatus.TRUE,
            reason=REASON_REMOVED,
            message="all Docker resources have been removed",
        ),
    )
    set_condition(
        new.conditions,
        Condition(
            type=CONDITION_CONTAINERS_RUNNING,
            status=ConditionStatus.FALSE,
            reason=REASON_REMOVED,
            message="all Docker resources have been removed",
        ),
    )
    new.services = []
    return new
