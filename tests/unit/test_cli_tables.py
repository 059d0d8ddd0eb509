"""The columns of `caractrl get`: the seed's project row, nodes, wide, CONDITIONS rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from caravanserai.api import Condition, ConditionStatus, Node, Project
from cli.tables import NODE_COLUMNS, PROJECT_COLUMNS, conditions_summary, node_row, project_row

NOW = datetime(2026, 4, 7, 12, 0, 0, tzinfo=UTC)


def project(**status: Any) -> Project:
    return Project.model_validate(
        {
            "apiVersion": "caravanserai/v1",
            "kind": "Project",
            "metadata": {
                "name": "my-project",
                "generation": 1,
                "creationTimestamp": (NOW - timedelta(seconds=12)).isoformat(),
            },
            "spec": {"services": [{"name": "web", "image": "nginx:alpine"}]},
            "status": status,
        }
    )


def cond(type_: str, reason: str | None, minutes_ago: int, status: str = "True") -> Condition:
    return Condition(
        type=type_,
        status=ConditionStatus(status),
        reason=reason,
        last_transition_time=NOW - timedelta(minutes=minutes_ago),
    )


def test_seed_row() -> None:
    p = project(
        phase="Running",
        nodeRef="node-01",
        conditions=[{"type": "ContainersRunning", "status": "True", "reason": "ContainersRunning"}],
    )
    assert PROJECT_COLUMNS.header(False) == ["NAME", "PHASE", "NODE", "CONDITIONS", "AGE"]
    assert project_row(p, NOW, False) == [
        "my-project",
        "Running",
        "node-01",
        "ContainersRunning",
        "12s",
    ]


def test_placeholders_for_new_project() -> None:
    assert project_row(project(), NOW, False) == ["my-project", "<unknown>", "<none>", "-", "12s"]


def test_conditions_prefers_containers_running_over_later_ones() -> None:
    conditions = [
        cond("ContainersRunning", "ImagePullFailed", 5, "False"),
        cond("Phase", "AgentReported", 1),
    ]
    assert conditions_summary(conditions) == "ImagePullFailed"


def test_conditions_falls_back_to_latest_transition() -> None:
    conditions = [cond("Phase", "ContainersRunning", 1), cond("Other", "Older", 10)]
    assert conditions_summary(conditions) == "ContainersRunning"
    # Ties go to the later entry of the list.
    assert conditions_summary([cond("A", "First", 1), cond("B", "Second", 1)]) == "Second"


def test_conditions_appends_node_trouble() -> None:
    conditions = [
        cond("ContainersRunning", "ContainersRunning", 10),
        cond("NotReadyAt", "NodeNotReady", 1),
    ]
    assert conditions_summary(conditions) == "ContainersRunning,NodeNotReady"


def test_conditions_none() -> None:
    assert conditions_summary([]) == "-"
    assert conditions_summary([cond("Phase", None, 1)]) == "-"


def test_project_wide_columns() -> None:
    p = project(phase="Running", nodeRef="n1", services=[{"name": "web", "state": "running"}])
    assert PROJECT_COLUMNS.header(True)[5:] == ["SERVICES", "GENERATION", "IMAGES"]
    assert project_row(p, NOW, True)[5:] == ["1/1", "1", "nginx:alpine"]


def node(**kw: Any) -> Node:
    return Node.model_validate(
        {
            "apiVersion": "caravanserai/v1",
            "kind": "Node",
            "metadata": {
                "name": "node-01",
                "creationTimestamp": (NOW - timedelta(days=2)).isoformat(),
            },
            **kw,
        }
    )


def test_node_rows() -> None:
    assert NODE_COLUMNS.header(False) == ["NAME", "STATE", "IP", "AGE"]
    assert node_row(node(), NOW, False) == ["node-01", "<unknown>", "<none>", "2d"]
    n = node(
        spec={"unschedulable": True},
        status={
            "state": "Ready",
            "network": {"ip": "10.0.0.5"},
            "info": {
                "agentVersion": "0.1.0",
                "osImage": "Debian 12",
                "kernelVersion": "6.1",
                "dockerVersion": "24.0",
            },
        },
    )
    assert node_row(n, NOW, False) == ["node-01", "Ready,SchedulingDisabled", "10.0.0.5", "2d"]
    assert node_row(n, NOW, True, {"node-01": 3})[4:] == ["0.1.0", "Debian 12", "6.1", "24.0", "3"]
    assert node_row(node(), NOW, True, None)[4:] == ["<unknown>"] * 5
