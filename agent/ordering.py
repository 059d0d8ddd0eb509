"""Start order: whether a service's ``dependsOn`` conditions hold (pure, no I/O).

As ``docker compose up``: a service is created and started only once each dependency is
started (``service_started``), healthy (``service_healthy``; a dependency without a
healthcheck counts as healthy once running) or exited with code 0
(``service_completed_successfully``). A service already running is never stopped because a
dependency went away later.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.desired import ContainerSpec
from agent.runtime import ContainerInfo
from caravanserai.api.project import DependencyCondition

REASON_WAITING = "WaitingForDependencies"

_STARTED_STATES = frozenset({"running", "restarting", "exited", "dead", "paused"})


def dependency_met(
    condition: DependencyCondition, info: ContainerInfo | None, healthchecked: bool
) -> bool:
    if info is None:
        return False
    if condition is DependencyCondition.SERVICE_COMPLETED_SUCCESSFULLY:
        return info.state == "exited" and info.exit_code == 0
    if condition is DependencyCondition.SERVICE_HEALTHY:
        if not healthchecked:
            return info.state == "running"
        return info.state == "running" and info.health == "healthy"
    return info.state in _STARTED_STATES


def _wanted(condition: DependencyCondition) -> str:
    return {
        DependencyCondition.SERVICE_STARTED: "to start",
        DependencyCondition.SERVICE_HEALTHY: "to be healthy",
        DependencyCondition.SERVICE_COMPLETED_SUCCESSFULLY: "to complete successfully",
    }[condition]


def unmet_dependencies(
    spec: ContainerSpec,
    containers: Mapping[str, ContainerInfo | None],
    healthchecked: set[str],
) -> list[str]:
    """What ``spec`` still waits for, e.g. ``["db to be healthy"]`` (empty: start it)."""
    return [
        f"{dep} {_wanted(condition)}"
        for dep, condition in spec.depends_on
        if not dependency_met(condition, containers.get(dep), dep in healthchecked)
    ]


def completes(plan_containers: tuple[ContainerSpec, ...]) -> set[str]:
    """Services some other service waits on to complete: their exit 0 is success, not a
    failure of the project."""
    return {
        dep
        for spec in plan_containers
        for dep, condition in spec.depends_on
        if condition is DependencyCondition.SERVICE_COMPLETED_SUCCESSFULLY
    }
