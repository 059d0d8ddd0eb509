"""The resource models: wire form, defaults, timestamps, conditions, problem documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from caravanserai.api import (
    API_VERSION,
    AlreadyExists,
    BadRequest,
    Condition,
    ConditionStatus,
    Conflict,
    Expired,
    FieldError,
    Invalid,
    ListMeta,
    Node,
    NodeList,
    NotFound,
    ObjectMeta,
    Project,
    ProjectList,
    ProjectPhase,
    Timestamp,
    WatchEvent,
    get_condition,
    remove_condition,
    set_condition,
)
from caravanserai.api.problems import CaravanseraiError, Problem, error_from_problem

WIRE_PROJECT: dict[str, Any] = {
    "apiVersion": "caravanserai/v1",
    "kind": "Project",
    "metadata": {
        "name": "wordpress",
        "labels": {"app": "blog"},
        "annotations": {},
        "uid": "u-1",
        "resourceVersion": "17",
        "generation": 2,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    },
    "spec": {
        "services": [
            {
                "name": "db",
                "image": "mysql:8",
                "env": [{"name": "MYSQL_DATABASE", "value": "wp"}],
                "volumeMounts": [{"name": "mysql-data", "mountPath": "/var/lib/mysql"}],
                "command": ["mysqld"],
                "ports": [{"containerPort": 3306, "hostPort": 3306, "protocol": "tcp"}],
            }
        ],
        "volumes": [{"name": "mysql-data", "type": "Ephemeral"}],
        "ingress": [
            {
                "name": "web",
                "host": "blog.example.com",
                "target": {"service": "db", "port": 80},
                "access": {"scope": "Internal"},
            }
        ],
        "expireAt": "2026-04-07T00:00:00Z",
    },
    "status": {
        "phase": "Running",
        "nodeRef": "node-01",
        "conditions": [
            {
                "type": "Phase",
                "status": "True",
                "reason": "ContainersRunning",
                "message": "all containers up",
                "lastTransitionTime": "2026-01-01T00:00:05.250000Z",
            }
        ],
        "observedGeneration": 2,
        "services": [{"name": "db", "containerId": "c1", "state": "running", "exitCode": 0}],
        "history": [{"phase": "Pending", "reason": "Created", "time": "2026-01-01T00:00:00Z"}],
    },
}


def test_project_round_trip_is_exact() -> None:
    p = Project.model_validate(WIRE_PROJECT)
    assert p.to_wire() == WIRE_PROJECT
    again = Project.model_validate(p.to_wire())
    assert again == p
    assert again.to_wire() == WIRE_PROJECT
    # Through JSON text as well (what the store and HTTP do).
    assert Project.model_validate_json(json.dumps(p.to_wire())) == p


def test_minimal_project_gets_defaults_and_is_stable() -> None:
    p = Project.model_validate(
        {"metadata": {"name": "x"}, "spec": {"services": [{"name": "web", "image": "nginx"}]}}
    )
    wire = p.to_wire()
    assert wire == {
        "apiVersion": API_VERSION,
        "kind": "Project",
        "metadata": {"name": "x", "labels": {}, "annotations": {}},
        "spec": {
            "services": [
                {"name": "web", "image": "nginx", "env": [], "volumeMounts": [], "ports": []}
            ],
            "volumes": [],
            "ingress": [],
        },
        "status": {"conditions": [], "services": [], "history": []},
    }
    assert Project.model_validate(wire).to_wire() == wire


def test_port_mapping_and_volume_defaults() -> None:
    p = Project.model_validate(
        {
            "metadata": {"name": "x"},
            "spec": {
                "services": [{"name": "a", "image": "b", "ports": [{"containerPort": 80}]}],
                "volumes": [{"name": "v"}],
                "ingress": [{"name": "i", "host": "h", "target": {"service": "a", "port": 80}}],
            },
        }
    )
    assert p.to_wire()["spec"]["services"][0]["ports"] == [  # type: ignore[index]
        {"containerPort": 80, "protocol": "tcp"}
    ]
    assert p.spec.volumes[0].type == "Ephemeral"
    assert p.spec.ingress[0].access.scope == "Internal"


def test_node_round_trip() -> None:
    wire: dict[str, Any] = {
        "apiVersion": "caravanserai/v1",
        "kind": "Node",
        "metadata": {"name": "edge-node-01", "labels": {"zone": "hsinchu"}, "annotations": {}},
        "spec": {"hostname": "edge-01.local", "unschedulable": True},
        "status": {
            "state": "Ready",
            "network": {
                "ip": "10.0.0.5",
                "mode": "DERP",
                "agentPort": 9090,
                "throughput": {"download": "100Mbps", "lastTestTime": "2026-01-01T00:00:00Z"},
            },
            "capacity": {"cpu": "4"},
            "allocatable": {"cpu": "3"},
            "info": {"kernelVersion": "6.1"},
            "lastHeartbeat": "2026-01-01T00:00:00Z",
            "conditions": [],
        },
    }
    n = Node.model_validate(wire)
    assert n.to_wire() == wire
    assert Node.model_validate(n.to_wire()) == n


def test_node_defaults() -> None:
    n = Node.model_validate({"metadata": {"name": "n"}})
    assert n.spec.unschedulable is False
    assert n.status.state is None
    assert n.to_wire()["spec"] == {"unschedulable": False}


def test_list_models() -> None:
    lst = ProjectList(metadata=ListMeta(resource_version="5", continue_="tok"), items=[])
    assert lst.to_wire() == {
        "apiVersion": API_VERSION,
        "kind": "ProjectList",
        "metadata": {"resourceVersion": "5", "continue": "tok"},
        "items": [],
    }
    assert ProjectList.model_validate(lst.to_wire()) == lst
    nodes = NodeList.model_validate(
        {"metadata": {"resourceVersion": "1"}, "items": [{"metadata": {"name": "n"}}]}
    )
    assert nodes.metadata.continue_ is None
    assert "continue" not in nodes.to_wire()["metadata"]  # type: ignore[operator]


def test_unknown_fields_are_rejected_by_the_models() -> None:
    with pytest.raises(ValidationError) as info:
        Project.model_validate({"metadata": {"name": "x"}, "spec": {}, "bogus": 1})
    assert [e["type"] for e in info.value.errors()] == ["extra_forbidden"]


def test_python_names_work_in_code() -> None:
    # Python code builds models by attribute name; the wire form is camelCase.
    meta = ObjectMeta(name="x", resource_version="3")
    assert meta.to_wire()["resourceVersion"] == "3"


# --------------------------------------------------------------------------------------------
# Timestamps: RFC 3339, UTC, trailing Z.


class Stamped(BaseModel):
    at: Timestamp


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (datetime(2026, 4, 7, tzinfo=UTC), "2026-04-07T00:00:00Z"),
        (datetime(2026, 4, 7, 2, tzinfo=timezone(timedelta(hours=2))), "2026-04-07T00:00:00Z"),
        (datetime(2026, 4, 6, 19, tzinfo=timezone(timedelta(hours=-5))), "2026-04-07T00:00:00Z"),
        (datetime(2026, 4, 7, 0, 0, 0, 123456, tzinfo=UTC), "2026-04-07T00:00:00.123456Z"),
        (datetime(2026, 4, 7, 0, 0, 0, 500000, tzinfo=UTC), "2026-04-07T00:00:00.500000Z"),
        ("2026-04-07T08:00:00+08:00", "2026-04-07T00:00:00Z"),
        ("2026-04-07T00:00:00Z", "2026-04-07T00:00:00Z"),
    ],
)
def test_timestamp_serialises_as_rfc3339_utc(value: Any, wire: str) -> None:
    stamped = Stamped(at=value)
    assert stamped.model_dump(mode="json") == {"at": wire}
    assert Stamped.model_validate_json(stamped.model_dump_json()).at == stamped.at


def test_timestamp_python_mode_keeps_the_datetime() -> None:
    at = datetime(2026, 4, 7, tzinfo=UTC)
    assert Stamped(at=at).model_dump() == {"at": at}


@pytest.mark.parametrize("value", ["2026-04-07T00:00:00", datetime(2026, 4, 7), "soon"])
def test_timestamp_must_be_aware(value: Any) -> None:
    with pytest.raises(ValidationError):
        Stamped(at=value)


# --------------------------------------------------------------------------------------------
# Conditions.

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)


def cond(status: ConditionStatus, reason: str = "R", **kw: Any) -> Condition:
    return Condition(type="Ready", status=status, reason=reason, **kw)


def test_set_condition_adds_with_transition_time() -> None:
    conditions: list[Condition] = []
    assert set_condition(conditions, cond(ConditionStatus.TRUE), now=T0) is True
    assert conditions[0].last_transition_time == T0
    assert get_condition(conditions, "Ready") is conditions[0]
    assert get_condition(conditions, "Other") is None


def test_transition_time_moves_only_when_status_changes() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, cond(ConditionStatus.TRUE), now=T0)
    # Same status, new reason: changed, but the transition time stays.
    assert set_condition(conditions, cond(ConditionStatus.TRUE, reason="Other"), now=T1) is True
    assert conditions[0].reason == "Other"
    assert conditions[0].last_transition_time == T0
    # Identical: nothing changes.
    assert set_condition(conditions, cond(ConditionStatus.TRUE, reason="Other"), now=T2) is False
    # Status flips: the transition time moves.
    assert set_condition(conditions, cond(ConditionStatus.FALSE), now=T2) is True
    assert conditions[0].last_transition_time == T2
    assert len(conditions) == 1


def test_explicit_transition_time_wins() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, cond(ConditionStatus.TRUE, last_transition_time=T1), now=T2)
    assert conditions[0].last_transition_time == T1


def test_remove_condition() -> None:
    conditions = [cond(ConditionStatus.TRUE), Condition(type="Phase", status=ConditionStatus.TRUE)]
    assert remove_condition(conditions, "Ready") is True
    assert [c.type for c in conditions] == ["Phase"]
    assert remove_condition(conditions, "Ready") is False


# --------------------------------------------------------------------------------------------
# Problem details and typed errors.


@pytest.mark.parametrize(
    ("cls", "status", "slug"),
    [
        (BadRequest, 400, "bad-request"),
        (NotFound, 404, "not-found"),
        (Conflict, 409, "conflict"),
        (AlreadyExists, 409, "already-exists"),
        (Expired, 410, "expired"),
        (Invalid, 422, "invalid"),
    ],
)
def test_errors_map_to_problems_and_back(
    cls: type[CaravanseraiError], status: int, slug: str
) -> None:
    errors = [FieldError(field="spec.services", message="must have at least one service")]
    err = cls("something happened", errors)
    problem = err.to_problem(instance="/api/v1/projects/x")
    assert problem.status == status
    assert problem.type.endswith("/" + slug)
    assert problem.instance == "/api/v1/projects/x"
    wire = json.loads(problem.model_dump_json(exclude_none=True))
    assert wire["errors"] == [
        {"field": "spec.services", "message": "must have at least one service"}
    ]
    back = error_from_problem(Problem.model_validate(wire))
    assert type(back) is cls
    assert back.detail == "something happened"
    assert back.errors == errors


def test_unknown_status_problem_keeps_its_status() -> None:
    back = error_from_problem(Problem(title="Teapot", status=418))
    assert type(back) is CaravanseraiError
    assert back.status == 418


def test_field_error_str() -> None:
    assert str(FieldError(field="metadata.name", message="required")) == "metadata.name: required"
    assert str(FieldError(field="", message="bad")) == "bad"


def test_watch_event_round_trip() -> None:
    p = Project.model_validate(WIRE_PROJECT)
    event = WatchEvent(type="MODIFIED", object=p.to_wire())
    back = WatchEvent.model_validate_json(event.model_dump_json())
    assert Project.model_validate(back.object) == p


def test_phase_values_are_the_seed_spelling() -> None:
    assert [p.value for p in ProjectPhase] == [
        "Pending",
        "Scheduled",
        "Running",
        "Failed",
        "Terminating",
        "Terminated",
    ]
