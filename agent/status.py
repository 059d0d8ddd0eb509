"""From what Docker shows to what the project's status says (pure, no I/O).

Running  + ``ContainersRunning=True``  (reason ``ContainersRunning``): every service runs.
Failed   + ``ContainersRunning=False``: a failure (``ImagePullFailed``, ``PortConflict``,
         ``VolumeError``, ...) or a container that exited (``ContainerExited``).
Otherwise the project is still starting: the phase stays, nothing is claimed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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

REASON_RUNNING = "ContainersRunning"
REASON_EXITED = "ContainerExited"
REASON_STARTING = "ContainersStarting"
REASON_REMOVED = "ResourcesRemoved"

_ORDER = {"ImagePullFailed": 0, "VolumeError": 1, "PortConflict": 2}


@dataclass(frozen=True)
class Failure:
    """A failure met while converging one service (or the project, service None)."""

    reason: str
    message: str
    service: str | None = None


@dataclass(frozen=True)
class Observation:
    """The verdict on a project: phase (None: keep the current one) and the condition."""

    phase: ProjectPhase | None
    condition: Condition
    services: list[ServiceStatus]

    @property
    def settled(self) -> bool:
        return self.phase is not None


def service_statuses(
    services: Sequence[str],
    containers: Mapping[str, ContainerInfo | None],
    failures: Sequence[Failure] = (),
) -> list[ServiceStatus]:
    by_service = {f.service: f for f in failures if f.service}
    out = []
    for name in services:
        info = containers.get(name)
        failure = by_service.get(name)
        message = failure.message if failure else None
        if info is None:
            out.append(ServiceStatus(name=name, state="missing", message=message))
            continue
        if info.state in ("exited", "dead") and message is None:
            message = f"exited with code {info.exit_code}"
            if info.oom_killed:
                message += " (out of memory)"
            if info.error:
                message += f": {info.error}"
        out.append(
            ServiceStatus(
                name=name,
                container_id=info.id[:12],
                state=info.state,
                exit_code=info.exit_code,
                message=message,
            )
        )
    return out


def observe(
    services: Sequence[str],
    containers: Mapping[str, ContainerInfo | None],
    failures: Sequence[Failure] = (),
) -> Observation:
    """The status of a project whose services are ``services`` (in spec order)."""
    statuses = service_statuses(services, containers, failures)
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
        )
    exited = [
        s for s in statuses if s.state in ("exited", "dead")
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
        )
    if statuses and all(s.state == "running" for s in statuses):
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
        )
    waiting = ", ".join(f"{s.name} ({s.state})" for s in statuses if s.state != "running")
    return Observation(
        None,
        Condition(
            type=CONDITION_CONTAINERS_RUNNING,
            status=ConditionStatus.FALSE,
            reason=REASON_STARTING,
            message=f"waiting for: {waiting}",
        ),
        statuses,
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
