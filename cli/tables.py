"""The columns of ``get`` for each kind, normal and wide.

Projects: ``NAME PHASE NODE CONDITIONS AGE`` (seed guide), wide adds
``SERVICES GENERATION IMAGES``. Nodes: ``NAME STATE IP AGE``, wide adds
``VERSION OS KERNEL DOCKER PROJECTS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from caravanserai.api import Condition, Node, Project
from caravanserai.api.project import (
    CONDITION_CONTAINERS_RUNNING,
    CONDITION_NOT_READY_AT,
    CONDITION_TERMINATING_AT,
)
from cli.formatting import NONE, UNKNOWN, age, or_placeholder

# Conditions that flag trouble on the node under a project; shown next to the main reason so
# a Running project whose node stopped answering does not look healthy.
_WARNING_CONDITIONS = (CONDITION_NOT_READY_AT, CONDITION_TERMINATING_AT)


def conditions_summary(conditions: Sequence[Condition]) -> str:
    """The CONDITIONS column of ``get projects``.

    The original showed the reason of the *last* condition, which after a ``NotReadyAt`` was
    appended hid what the containers were doing. We show:

    1. the reason of the ``ContainersRunning`` condition when there is one (the agent's
       verdict: ``ContainersRunning``, ``ImagePullFailed``, ``PortConflict``...), otherwise the
       reason of the condition that transitioned last (ties: the later one in the list);
    2. followed by ``,<reason>`` of ``NotReadyAt`` / ``TerminatingAt`` when present, since
       those say the node is in trouble (``ContainersRunning,NodeNotReady``);
    3. ``-`` when there is no condition with a reason.
    """
    with_reason = [c for c in conditions if c.reason]
    if not with_reason:
        return "-"
    main = next((c for c in with_reason if c.type == CONDITION_CONTAINERS_RUNNING), None)
    if main is None:
        # max() keeps the first of equal keys; reversed() makes ties go to the later entry.
        main = max(
            reversed(with_reason),
            key=lambda c: c.last_transition_time.timestamp()
            if c.last_transition_time
            else float("-inf"),
        )
    reasons = [str(main.reason)]
    for c in with_reason:
        if c.type in _WARNING_CONDITIONS and c.reason not in reasons:
            reasons.append(str(c.reason))
    return ",".join(reasons)


def project_services(project: Project) -> str:
    """``running/total``: how many of the spec's services the agent reports running."""
    total = len(project.spec.services)
    running = sum(1 for s in project.status.services if (s.state or "").lower() == "running")
    return f"{running}/{total}"


def project_images(project: Project) -> str:
    return ",".join(s.image for s in project.spec.services) or NONE


def project_row(project: Project, now: datetime, wide: bool, _: object = None) -> list[str]:
    status = project.status
    row = [
        project.metadata.name,
        or_placeholder(status.phase and status.phase.value, UNKNOWN),
        or_placeholder(status.node_ref, NONE),
        conditions_summary(status.conditions),
        age(project.metadata.creation_timestamp, now),
    ]
    if wide:
        row += [
            project_services(project),
            or_placeholder(project.metadata.generation, UNKNOWN),
            project_images(project),
        ]
    return row


def node_state(node: Node) -> str:
    # kubectl's "Ready,SchedulingDisabled": a cordoned node must not look like a normal one.
    state = node.status.state.value if node.status.state else UNKNOWN
    return f"{state},SchedulingDisabled" if node.spec.unschedulable else state


def node_row(
    node: Node, now: datetime, wide: bool, project_counts: Mapping[str, int] | None = None
) -> list[str]:
    row = [
        node.metadata.name,
        node_state(node),
        or_placeholder(node.status.network.ip, NONE),
        age(node.metadata.creation_timestamp, now),
    ]
    if wide:
        info = node.status.info
        row += [
            or_placeholder(info.agent_version, UNKNOWN),
            or_placeholder(info.os_image, UNKNOWN),
            or_placeholder(info.kernel_version, UNKNOWN),
            or_placeholder(info.docker_version, UNKNOWN),
            str((project_counts or {}).get(node.metadata.name, 0))
            if project_counts is not None
            else UNKNOWN,
        ]
    return row


@dataclass(frozen=True)
class Columns:
    headers: tuple[str, ...]
    wide_headers: tuple[str, ...]
    row: Callable[..., list[str]]

    def header(self, wide: bool) -> list[str]:
        return list(self.headers + (self.wide_headers if wide else ()))


PROJECT_COLUMNS = Columns(
    ("NAME", "PHASE", "NODE", "CONDITIONS", "AGE"),
    ("SERVICES", "GENERATION", "IMAGES"),
    project_row,
)
NODE_COLUMNS = Columns(
    ("NAME", "STATE", "IP", "AGE"),
    ("VERSION", "OS", "KERNEL", "DOCKER", "PROJECTS"),
    node_row,
)
