"""Manifest validation: every rule, each error asserted by exact field path and message."""

from __future__ import annotations

import copy
import itertools
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from caravanserai.api import BadRequest, FieldError, Invalid, Node, Project
from caravanserai.api.validation import (
    MSG_ABSOLUTE_PATH,
    MSG_ANNOTATIONS_SIZE,
    MSG_DNS_LABEL,
    MSG_ENV_NAME,
    MSG_HOSTNAME,
    MSG_IMAGE,
    MSG_LABEL_KEY,
    MSG_LABEL_VALUE,
    MSG_NODE_HOSTNAME,
    MSG_TIMESTAMP,
    is_dns_label,
    is_env_name,
    is_hostname,
    is_image_reference,
    is_label_key,
    is_label_value,
    parse_resource,
    validate_name,
    validate_node,
    validate_project,
)

DIGEST = "sha256:" + "a" * 64
PORT = "must be between 1 and 65535"
DNS = MSG_DNS_LABEL
PHASES = '"Pending", "Scheduled", "Running", "Failed", "Terminating", "Terminated"'

# The messages the brief fixes verbatim: changing them is an API change.


def test_fixed_message_texts() -> None:
    assert MSG_DNS_LABEL == (
        'must be a DNS label: lowercase alphanumerics and "-", at most 63 characters, '
        "starting and ending with an alphanumeric"
    )
    assert MSG_TIMESTAMP == "must be an RFC 3339 timestamp with a time zone offset"


# --------------------------------------------------------------------------------------------
# Builders.

DELETE = object()


def project(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Project",
        "metadata": {"name": "demo"},
        "spec": {"services": [{"name": "web", "image": "nginx:alpine"}], **spec},
    }


def node() -> dict[str, Any]:
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Node",
        "metadata": {"name": "edge-node-01", "labels": {"zone": "hsinchu"}},
        "spec": {"hostname": "edge-01.local", "unschedulable": False},
    }


_TOKEN = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def patched(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``{"spec.services[0].image": value}`` applied (DELETE
    removes the key; intermediate objects and list slots are created as needed)."""
    data = copy.deepcopy(base)
    for path, value in changes.items():
        tokens = [int(m[1]) if m[1] else m[2] for m in _TOKEN.finditer(path)]
        node: Any = data
        for token, following in itertools.pairwise(tokens):
            if isinstance(token, int):
                while len(node) <= token:
                    node.append({} if not isinstance(following, int) else [])
                node = node[token]
            else:
                node = node.setdefault(token, [] if isinstance(following, int) else {})
        last = tokens[-1]
        if value is DELETE:
            del node[last]
        elif isinstance(last, int) and len(node) == last:
            node.append(value)
        else:
            node[last] = value
    return data


def errors_of(data: Any, kind: str | None = None) -> list[str]:
    with pytest.raises(Invalid) as info:
        parse_resource(data, kind=kind)
    assert info.value.errors, "Invalid must carry its errors"
    assert all(isinstance(e, FieldError) for e in info.value.errors)
    return [str(e) for e in info.value.errors]


# --------------------------------------------------------------------------------------------
# Predicates.


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("web", True),
        ("my-project", True),
        ("0abc", True),
        ("a1-b2", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("", False),
        ("A", False),
        ("Web", False),
        ("-a", False),
        ("a-", False),
        ("a_b", False),
        ("a.b", False),
        ("a b", False),
        ("a\n", False),
        ("ä", False),
        (None, False),
        (5, False),
    ],
)
def test_is_dns_label(value: Any, ok: bool) -> None:
    assert is_dns_label(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("admin", True),
        ("blog.example.com", True),
        ("a.b-c.d", True),
        ("x1.y2", True),
        (".".join(["a" * 63] * 3) + "." + "a" * 61, True),  # 253 characters
        (".".join(["a" * 63] * 3) + "." + "a" * 62, False),  # 254
        ("a" * 64 + ".com", False),
        ("Blog.example.com", False),
        ("a..b", False),
        (".a", False),
        ("a.", False),
        ("-a.com", False),
        ("a-.com", False),
        ("a_b.com", False),
        ("*.example.com", False),
        ("blog.example.com:80", False),
        ("http://x", False),
        ("", False),
        (None, False),
    ],
)
def test_is_hostname(value: Any, ok: bool) -> None:
    assert is_hostname(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("nginx", True),
        ("nginx:alpine", True),
        ("postgres:15", True),
        ("mysql:8", True),
        ("wordpress:latest", True),
        ("myapp:pr-42", True),
        ("library/nginx", True),
        ("docker.io/library/nginx:1.25.3", True),
        ("localhost:5000/app", True),
        ("registry.example.com:5000/team/app:1.2", True),
        ("ghcr.io/org/app@" + DIGEST, True),
        ("app:v1@" + DIGEST, True),
        ("[::1]:5000/app:dev", True),
        ("my_app", True),
        ("a__b", True),
        ("a---b", True),
        ("a.b", True),
        ("Registry.Example.com/app", True),
        ("app:" + "t" * 128, True),
        ("app:_x", True),
        ("a" * 255, True),
        ("a" * 256, False),  # repository name over 255 characters
        ("app:" + "t" * 129, False),
        ("", False),
        ("Nginx", False),
        ("nginx:", False),
        (":tag", False),
        ("nginx:-tag", False),
        ("nginx:.tag", False),
        ("nginx@sha256:abc", False),
        ("a//b", False),
        ("nginx alpine", False),
        ("/nginx", False),
        ("nginx/", False),
        ("a_-b", False),
        ("_a", False),
        ("a___b", False),
        ("nginx:alpine\n", False),
        ("nginx:al pine", False),
        ("näginx", False),
        ("app@" + DIGEST + ":tag", False),
        (None, False),
    ],
)
def test_is_image_reference(value: Any, ok: bool) -> None:
    assert is_image_reference(value) is ok


def test_image_reference_is_fast_on_pathological_input() -> None:
    # Python's backtracking regex engine must not blow up on near-misses.
    for text in ("a." * 600 + "!", "a-" * 600 + "!", "a/" * 600 + "!", "a" * 5000 + "!"):
        assert not is_image_reference(text)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("APP_ENV", True),
        ("_x", True),
        ("a.b", True),
        ("my-var", True),
        ("x1", True),
        ("-x", True),
        (".x", True),
        ("", False),
        ("1ABC", False),
        ("A=B", False),
        ("A B", False),
        ("Ä", False),
        ("A$", False),
        (None, False),
    ],
)
def test_is_env_name(value: Any, ok: bool) -> None:
    assert is_env_name(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("app", True),
        ("A", True),
        ("app.kubernetes.io/name", True),
        ("example.com/a_b.c-d", True),
        ("a" * 63, True),
        ("a" * 253 + "/x", False),
        ("a" * 64, False),
        ("", False),
        ("/a", False),
        ("a/", False),
        ("a/b/c", False),
        ("Example.com/a", False),
        ("-a", False),
        ("a_", False),
        ("a b", False),
        ((("a" * 63 + ".") * 3 + "a" * 61) + "/x", True),
        ((("a" * 63 + ".") * 3 + "a" * 62) + "/x", False),
        (None, False),
    ],
)
def test_is_label_key(value: Any, ok: bool) -> None:
    assert is_label_key(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("v1", True),
        ("a.b_c-d", True),
        ("A" * 63, True),
        ("A" * 64, False),
        ("-a", False),
        ("a-", False),
        ("a b", False),
        ("a/b", False),
        (None, False),
    ],
)
def test_is_label_value(value: Any, ok: bool) -> None:
    assert is_label_value(value) is ok


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nginx-demo", []),
        ("", ["metadata.name: must not be empty"]),
        (None, ["metadata.name: required"]),
        (42, ["metadata.name: must be a string"]),
        ("Nginx", [f"metadata.name: {DNS}"]),
        ("a.b", [f"metadata.name: {DNS}"]),  # a DNS label, not a subdomain (the original's rule)
        ("a" * 64, [f"metadata.name: {DNS}"]),
    ],
)
def test_validate_name(name: Any, expected: list[str]) -> None:
    assert [str(e) for e in validate_name(name)] == expected


def test_validate_name_other_field() -> None:
    assert [str(e) for e in validate_name("X_", field="name")] == [f"name: {DNS}"]


# --------------------------------------------------------------------------------------------
# Valid manifests.

FULL_PROJECT: dict[str, Any] = {
    "apiVersion": "caravanserai/v1",
    "kind": "Project",
    "metadata": {
        "name": "full",
        "labels": {"app.kubernetes.io/name": "blog", "tier": "", "Env": "Prod_1.x"},
        "annotations": {"example.com/owner": "anything goes here: even spaces!"},
        # Server-managed fields are accepted (and later overwritten) when well-typed.
        "uid": "0b7f7e4c-1111-2222-3333-444455556666",
        "resourceVersion": "42",
        "generation": 3,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "deletionTimestamp": "2026-01-02T00:00:00+02:00",
    },
    "spec": {
        "services": [
            {
                "name": "db",
                "image": "registry.example.com:5000/team/mysql:8.0@" + DIGEST,
                "env": [
                    {"name": "MYSQL_ROOT_PASSWORD", "value": "secret"},
                    {"name": "com.example.flag"},
                    {"name": "my-var", "value": ""},
                ],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/var/lib/mysql"},
                    {"name": "data", "mountPath": "/backup"},  # same volume twice: fine
                ],
                "ports": [{"containerPort": 3306}],
            },
            {
                "name": "app",
                "image": "wordpress:latest",
                "command": ["php", "-S", "0.0.0.0:80"],
                "entrypoint": [],
                "ports": [
                    {"containerPort": 80, "hostPort": 8080},
                    {"containerPort": 53, "hostPort": 8080, "protocol": "udp"},  # other protocol
                    {"containerPort": 80, "hostPort": 65535, "protocol": "tcp"},
                ],
            },
        ],
        "volumes": [{"name": "data", "type": "Ephemeral"}, {"name": "unused"}],
        "ingress": [
            {"name": "web", "host": "blog.example.com", "target": {"service": "app", "port": 80}},
            {
                "name": "admin",
                "host": "admin",
                "target": {"service": "app", "port": 1},
                "access": {"scope": "Internal"},
            },
        ],
        "expireAt": "2026-04-07T02:00:00+02:00",
    },
    "status": {
        "phase": "Running",
        "nodeRef": "node-01",
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Phase",
                "status": "True",
                "reason": "ContainersRunning",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "services": [{"name": "db", "containerId": "abc", "state": "running", "exitCode": 0}],
        "history": [{"phase": "Pending", "time": "2026-01-01T00:00:00Z"}],
    },
}


def test_full_project_is_valid() -> None:
    p = parse_resource(FULL_PROJECT)
    assert isinstance(p, Project)
    assert p.spec.expire_at == datetime(2026, 4, 7, tzinfo=UTC)
    assert p.spec.services[1].ports[1].protocol == "udp"
    assert p.status.phase == "Running"
    assert validate_project(p) == []


def test_project_with_kind_argument() -> None:
    assert isinstance(parse_resource(project(), kind="Project"), Project)


def test_node_is_valid() -> None:
    n = parse_resource(node(), kind="Node")
    assert isinstance(n, Node)
    assert n.spec.hostname == "edge-01.local"
    assert validate_node(n) == []


def test_full_node_is_valid() -> None:
    data = patched(
        node(),
        {
            "spec.hostname": "Edge-01.Local",  # machine hostnames may have capitals
            "status.state": "Ready",
            "status.network": {
                "ip": "10.0.0.5",
                "mode": "Direct",
                "agentPort": 9090,
                "proxyPort": 8081,
            },
            "status.capacity": {"cpu": "4", "memory": "8Gi"},
            "status.info": {"hostname": "edge-01", "agentVersion": "0.1.0"},
            "status.lastHeartbeat": "2026-01-01T00:00:00Z",
            "status.conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}],
        },
    )
    n = parse_resource(data)
    assert isinstance(n, Node)
    assert n.status.network.agent_port == 9090


def test_yaml_native_values_are_accepted() -> None:
    # YAML loaders produce datetimes for unquoted timestamps and non-string keys.
    data = project(expireAt=datetime(2026, 4, 7, tzinfo=UTC))
    data["metadata"]["labels"] = {1: "one", False: "no"}
    p = parse_resource(data, kind="Project")
    assert isinstance(p, Project)
    assert p.spec.expire_at == datetime(2026, 4, 7, tzinfo=UTC)
    assert p.metadata.labels == {"1": "one", "false": "no"}
    offset = datetime(2026, 4, 7, 2, tzinfo=timezone(timedelta(hours=2)))
    q = parse_resource(project(expireAt=offset))
    assert isinstance(q, Project)
    assert q.spec.expire_at == datetime(2026, 4, 7, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Invalid manifests: one rule each (patched onto a valid manifest), every error exactly.

PROJECT_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    # apiVersion / kind: stated, and right.
    ("apiVersion missing", {"apiVersion": DELETE}, ["apiVersion: required"]),
    ("apiVersion wrong", {"apiVersion": "v1"}, ['apiVersion: must be "caravanserai/v1"']),
    ("apiVersion not a string", {"apiVersion": 1}, ['apiVersion: must be "caravanserai/v1"']),
    ("kind missing", {"kind": DELETE}, ["kind: required"]),
    ("kind unknown", {"kind": "Deployment"}, ['kind: must be one of "Project", "Node"']),
    ("kind lowercase", {"kind": "project"}, ['kind: must be one of "Project", "Node"']),
    # metadata
    ("metadata missing", {"metadata": DELETE}, ["metadata: required"]),
    ("metadata not an object", {"metadata": "demo"}, ["metadata: must be an object"]),
    ("name missing", {"metadata.name": DELETE}, ["metadata.name: required"]),
    ("name empty", {"metadata.name": ""}, ["metadata.name: must not be empty"]),
    ("name not a string", {"metadata.name": 7}, ["metadata.name: must be a string"]),
    ("name uppercase", {"metadata.name": "My-Project"}, [f"metadata.name: {DNS}"]),
    ("name underscore", {"metadata.name": "my_project"}, [f"metadata.name: {DNS}"]),
    ("name with dot", {"metadata.name": "my.project"}, [f"metadata.name: {DNS}"]),
    ("name leading hyphen", {"metadata.name": "-x"}, [f"metadata.name: {DNS}"]),
    ("name 64 characters", {"metadata.name": "a" * 64}, [f"metadata.name: {DNS}"]),
    (
        "label key bad",
        {"metadata.labels": {"a/b/c": "x", "ok": "fine"}},
        [f"metadata.labels[a/b/c]: {MSG_LABEL_KEY}"],
    ),
    (
        "label value bad",
        {"metadata.labels": {"app": "a b"}},
        [f"metadata.labels[app]: {MSG_LABEL_VALUE}"],
    ),
    (
        "label key and value bad",
        {"metadata.labels": {"-k": "-v"}},
        [f"metadata.labels[-k]: {MSG_LABEL_KEY}", f"metadata.labels[-k]: {MSG_LABEL_VALUE}"],
    ),
    (
        "label value 64",
        {"metadata.labels": {"a": "v" * 64}},
        [f"metadata.labels[a]: {MSG_LABEL_VALUE}"],
    ),
    (
        "label value number",
        {"metadata.labels": {"port": 80}},
        ["metadata.labels[port]: must be a string"],
    ),
    ("labels not an object", {"metadata.labels": ["a"]}, ["metadata.labels: must be an object"]),
    (
        "annotation key bad",
        {"metadata.annotations": {"no spaces": "v"}},
        [f"metadata.annotations[no spaces]: {MSG_LABEL_KEY}"],
    ),
    (
        "annotations too large",
        {"metadata.annotations": {"a": "x" * (256 * 1024)}},
        [f"metadata.annotations: {MSG_ANNOTATIONS_SIZE}"],
    ),
    (
        "unknown metadata field",
        {"metadata.namespace": "default"},
        ["metadata.namespace: unknown field"],
    ),
    # server-managed fields: accepted, but typed
    (
        "generation string",
        {"metadata.generation": "1"},
        ["metadata.generation: must be an integer"],
    ),
    (
        "resourceVersion int",
        {"metadata.resourceVersion": 5},
        ["metadata.resourceVersion: must be a string"],
    ),
    ("uid int", {"metadata.uid": 5}, ["metadata.uid: must be a string"]),
    (
        "creationTimestamp bad",
        {"metadata.creationTimestamp": "yesterday"},
        [f"metadata.creationTimestamp: {MSG_TIMESTAMP}"],
    ),
    (
        "deletionTimestamp naive",
        {"metadata.deletionTimestamp": "2026-01-01T00:00:00"},
        [f"metadata.deletionTimestamp: {MSG_TIMESTAMP}"],
    ),
    ("status phase bad", {"status.phase": "Bogus"}, [f"status.phase: must be one of {PHASES}"]),
    ("status nodeRef int", {"status.nodeRef": 1}, ["status.nodeRef: must be a string"]),
    (
        "status condition bad",
        {"status.conditions": [{"type": "Phase", "status": "Yes"}]},
        ['status.conditions[0].status: must be one of "True", "False", "Unknown"'],
    ),
    (
        "status history time missing",
        {"status.history": [{"phase": "Pending"}]},
        ["status.history[0].time: required"],
    ),
    ("status unknown field", {"status.color": "red"}, ["status.color: unknown field"]),
    # top level
    ("unknown top-level field", {"extra": 1}, ["extra: unknown field"]),
    ("snake_case field", {"api_version": "caravanserai/v1"}, ["api_version: unknown field"]),
    ("spec missing", {"spec": DELETE}, ["spec: required"]),
    ("spec not an object", {"spec": []}, ["spec: must be an object"]),
    ("unknown spec field", {"spec.resources": {"cpu": 1}}, ["spec.resources: unknown field"]),
    # services
    ("services empty", {"spec.services": []}, ["spec.services: must have at least one service"]),
    (
        "services missing",
        {"spec.services": DELETE},
        ["spec.services: must have at least one service"],
    ),
    ("services null", {"spec.services": None}, ["spec.services: must be a list"]),
    ("services not a list", {"spec.services": {"web": {}}}, ["spec.services: must be a list"]),
    ("service not an object", {"spec.services[0]": "web"}, ["spec.services[0]: must be an object"]),
    (
        "service name missing",
        {"spec.services[0].name": DELETE},
        ["spec.services[0].name: required"],
    ),
    (
        "service name empty",
        {"spec.services[0].name": ""},
        ["spec.services[0].name: must not be empty"],
    ),
    ("service name bad", {"spec.services[0].name": "Web_1"}, [f"spec.services[0].name: {DNS}"]),
    (
        "service name duplicate",
        {"spec.services[1]": {"name": "web", "image": "redis"}},
        ['spec.services[1].name: duplicate service name "web"'],
    ),
    ("image missing", {"spec.services[0].image": DELETE}, ["spec.services[0].image: required"]),
    (
        "image empty (second service)",
        {"spec.services[1]": {"name": "api", "image": ""}},
        ["spec.services[1].image: must not be empty"],
    ),
    (
        "image bad",
        {"spec.services[0].image": "Nginx:alpine"},
        [f"spec.services[0].image: {MSG_IMAGE}"],
    ),
    (
        "image with spaces",
        {"spec.services[0].image": "nginx alpine"},
        [f"spec.services[0].image: {MSG_IMAGE}"],
    ),
    (
        "image not a string",
        {"spec.services[0].image": 15},
        ["spec.services[0].image: must be a string"],
    ),
    (
        "unknown service field",
        {"spec.services[0].imagee": "x"},
        ["spec.services[0].imagee: unknown field"],
    ),
    (
        "snake_case service field",
        {"spec.services[0].volume_mounts": []},
        ["spec.services[0].volume_mounts: unknown field"],
    ),
    # env
    (
        "env name missing",
        {"spec.services[0].env": [{"value": "x"}]},
        ["spec.services[0].env[0].name: required"],
    ),
    (
        "env name empty",
        {"spec.services[0].env": [{"name": ""}]},
        ["spec.services[0].env[0].name: must not be empty"],
    ),
    (
        "env name digit",
        {"spec.services[0].env": [{"name": "1X"}]},
        [f"spec.services[0].env[0].name: {MSG_ENV_NAME}"],
    ),
    (
        "env name with =",
        {"spec.services[0].env": [{"name": "A=B"}]},
        [f"spec.services[0].env[0].name: {MSG_ENV_NAME}"],
    ),
    (
        "env name duplicate",
        {"spec.services[0].env": [{"name": "A", "value": "1"}, {"name": "B"}, {"name": "A"}]},
        ['spec.services[0].env[2].name: duplicate environment variable "A"'],
    ),
    (
        "env value number",
        {"spec.services[0].env": [{"name": "PORT", "value": 8080}]},
        ["spec.services[0].env[0].value: must be a string"],
    ),
    (
        "env not a list",
        {"spec.services[0].env": {"A": "1"}},
        ["spec.services[0].env: must be a list"],
    ),
    # volume mounts
    (
        "mount of undeclared volume",
        {"spec.services[0].volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        ['spec.services[0].volumeMounts[0].name: volume "data" is not declared in spec.volumes'],
    ),
    (
        "mount name empty",
        {
            "spec.volumes": [{"name": "data"}],
            "spec.services[0].volumeMounts": [{"name": "", "mountPath": "/d"}],
        },
        ["spec.services[0].volumeMounts[0].name: must not be empty"],
    ),
    (
        "mountPath relative",
        {
            "spec.volumes": [{"name": "data"}],
            "spec.services[0].volumeMounts": [{"name": "data", "mountPath": "data"}],
        },
        [f"spec.services[0].volumeMounts[0].mountPath: {MSG_ABSOLUTE_PATH}"],
    ),
    (
        "mountPath empty",
        {
            "spec.volumes": [{"name": "data"}],
            "spec.services[0].volumeMounts": [{"name": "data", "mountPath": ""}],
        },
        ["spec.services[0].volumeMounts[0].mountPath: must not be empty"],
    ),
    (
        "mountPath root",
        {
            "spec.volumes": [{"name": "data"}],
            "spec.services[0].volumeMounts": [{"name": "data", "mountPath": "/x/.."}],
        },
        ['spec.services[0].volumeMounts[0].mountPath: must not be "/"'],
    ),
    (
        "mountPath missing",
        {"spec.volumes": [{"name": "data"}], "spec.services[0].volumeMounts": [{"name": "data"}]},
        ["spec.services[0].volumeMounts[0].mountPath: required"],
    ),
    (
        "mountPath repeated",
        {
            "spec.volumes": [{"name": "a"}, {"name": "b"}],
            "spec.services[0].volumeMounts": [
                {"name": "a", "mountPath": "/data"},
                {"name": "b", "mountPath": "/data/"},
            ],
        },
        ['spec.services[0].volumeMounts[1].mountPath: duplicate mount path "/data"'],
    ),
    # volumes
    ("volume name bad", {"spec.volumes": [{"name": "My Data"}]}, [f"spec.volumes[0].name: {DNS}"]),
    (
        "volume name empty",
        {"spec.volumes": [{"name": ""}]},
        ["spec.volumes[0].name: must not be empty"],
    ),
    (
        "volume name missing",
        {"spec.volumes": [{"type": "Ephemeral"}]},
        ["spec.volumes[0].name: required"],
    ),
    (
        "volume name duplicate",
        {"spec.volumes": [{"name": "data"}, {"name": "data"}]},
        ['spec.volumes[1].name: duplicate volume name "data"'],
    ),
    (
        "volume type bad",
        {"spec.volumes": [{"name": "data", "type": "HostPath"}]},
        ['spec.volumes[0].type: must be "Ephemeral"'],
    ),
    (
        "volume unknown field",
        {"spec.volumes": [{"name": "data", "size": "1Gi"}]},
        ["spec.volumes[0].size: unknown field"],
    ),
    # ingress
    (
        "ingress name duplicate",
        {
            "spec.ingress": [
                {"name": "web", "host": "a", "target": {"service": "web", "port": 80}},
                {"name": "web", "host": "b", "target": {"service": "web", "port": 80}},
            ]
        },
        ['spec.ingress[1].name: duplicate ingress name "web"'],
    ),
    (
        "ingress name bad",
        {"spec.ingress": [{"name": "Web", "host": "a", "target": {"service": "web", "port": 80}}]},
        [f"spec.ingress[0].name: {DNS}"],
    ),
    (
        "ingress target unknown service",
        {"spec.ingress": [{"name": "i", "host": "a", "target": {"service": "api", "port": 80}}]},
        ['spec.ingress[0].target.service: service "api" is not declared in spec.services'],
    ),
    (
        "ingress target service empty",
        {"spec.ingress": [{"name": "i", "host": "a", "target": {"service": "", "port": 80}}]},
        ["spec.ingress[0].target.service: must not be empty"],
    ),
    (
        "ingress target port 0",
        {"spec.ingress": [{"name": "i", "host": "a", "target": {"service": "web", "port": 0}}]},
        [f"spec.ingress[0].target.port: {PORT}"],
    ),
    (
        "ingress target port 65536",
        {"spec.ingress": [{"name": "i", "host": "a", "target": {"service": "web", "port": 65536}}]},
        [f"spec.ingress[0].target.port: {PORT}"],
    ),
    (
        "ingress target missing",
        {"spec.ingress": [{"name": "i", "host": "a"}]},
        ["spec.ingress[0].target: required"],
    ),
    (
        "ingress host bad",
        {
            "spec.ingress": [
                {"name": "i", "host": "Blog.Example.com", "target": {"service": "web", "port": 80}}
            ]
        },
        [f"spec.ingress[0].host: {MSG_HOSTNAME}"],
    ),
    (
        "ingress host empty",
        {"spec.ingress": [{"name": "i", "host": "", "target": {"service": "web", "port": 80}}]},
        ["spec.ingress[0].host: must not be empty"],
    ),
    (
        "ingress host duplicate",
        {
            "spec.ingress": [
                {"name": "a", "host": "x.example.com", "target": {"service": "web", "port": 80}},
                {"name": "b", "host": "x.example.com", "target": {"service": "web", "port": 81}},
            ]
        },
        ['spec.ingress[1].host: duplicate ingress host "x.example.com"'],
    ),
    (
        "ingress scope bad",
        {
            "spec.ingress": [
                {
                    "name": "i",
                    "host": "a",
                    "target": {"service": "web", "port": 80},
                    "access": {"scope": "Public"},
                }
            ]
        },
        ['spec.ingress[0].access.scope: must be "Internal"'],
    ),
    # expireAt
    (
        "expireAt naive",
        {"spec.expireAt": "2026-04-07T00:00:00"},
        [f"spec.expireAt: {MSG_TIMESTAMP}"],
    ),
    ("expireAt date only", {"spec.expireAt": "2026-04-07"}, [f"spec.expireAt: {MSG_TIMESTAMP}"]),
    ("expireAt words", {"spec.expireAt": "tomorrow"}, [f"spec.expireAt: {MSG_TIMESTAMP}"]),
    ("expireAt number", {"spec.expireAt": 1775520000}, [f"spec.expireAt: {MSG_TIMESTAMP}"]),
    (
        "expireAt naive YAML datetime",
        {"spec.expireAt": datetime(2026, 4, 7)},
        [f"spec.expireAt: {MSG_TIMESTAMP}"],
    ),
    # ports
    (
        "containerPort 0",
        {"spec.services[0].ports": [{"containerPort": 0}]},
        [f"spec.services[0].ports[0].containerPort: {PORT}"],
    ),
    (
        "containerPort 65536",
        {"spec.services[0].ports": [{"containerPort": 65536}]},
        [f"spec.services[0].ports[0].containerPort: {PORT}"],
    ),
    (
        "containerPort negative",
        {"spec.services[0].ports": [{"containerPort": -1}]},
        [f"spec.services[0].ports[0].containerPort: {PORT}"],
    ),
    (
        "containerPort missing",
        {"spec.services[0].ports": [{"hostPort": 80}]},
        ["spec.services[0].ports[0].containerPort: required"],
    ),
    (
        "containerPort string",
        {"spec.services[0].ports": [{"containerPort": "80"}]},
        ["spec.services[0].ports[0].containerPort: must be an integer"],
    ),
    (
        "containerPort float",
        {"spec.services[0].ports": [{"containerPort": 80.5}]},
        ["spec.services[0].ports[0].containerPort: must be an integer"],
    ),
    (
        "containerPort bool",
        {"spec.services[0].ports": [{"containerPort": True}]},
        ["spec.services[0].ports[0].containerPort: must be an integer"],
    ),
    (
        "hostPort 0",
        {"spec.services[0].ports": [{"containerPort": 80, "hostPort": 0}]},
        [f"spec.services[0].ports[0].hostPort: {PORT}"],
    ),
    (
        "hostPort 70000",
        {"spec.services[0].ports": [{"containerPort": 80, "hostPort": 70000}]},
        [f"spec.services[0].ports[0].hostPort: {PORT}"],
    ),
    (
        "protocol upper",
        {"spec.services[0].ports": [{"containerPort": 80, "protocol": "TCP"}]},
        ['spec.services[0].ports[0].protocol: must be one of "tcp", "udp"'],
    ),
    (
        "protocol sctp",
        {"spec.services[0].ports": [{"containerPort": 80, "protocol": "sctp"}]},
        ['spec.services[0].ports[0].protocol: must be one of "tcp", "udp"'],
    ),
    (
        "hostPort duplicate across services",
        {
            "spec.services[0].ports": [{"containerPort": 80, "hostPort": 8080}],
            "spec.services[1]": {
                "name": "api",
                "image": "api:1",
                "ports": [
                    {"containerPort": 9000, "hostPort": 9000},
                    {"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"},
                ],
            },
        },
        ["spec.services[1].ports[1].hostPort: duplicate host port 8080/tcp"],
    ),
    (
        "hostPort duplicate within service (udp)",
        {
            "spec.services[0].ports": [
                {"containerPort": 53, "hostPort": 53, "protocol": "udp"},
                {"containerPort": 5353, "hostPort": 53, "protocol": "udp"},
            ]
        },
        ["spec.services[0].ports[1].hostPort: duplicate host port 53/udp"],
    ),
    # command / entrypoint
    (
        "command string",
        {"spec.services[0].command": "echo hi"},
        ["spec.services[0].command: must be a list"],
    ),
    (
        "command item number",
        {"spec.services[0].command": ["sleep", 5]},
        ["spec.services[0].command[1]: must be a string"],
    ),
    (
        "entrypoint string",
        {"spec.services[0].entrypoint": "/bin/sh"},
        ["spec.services[0].entrypoint: must be a list"],
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [pytest.param(c, e, id=name) for name, c, e in PROJECT_CASES],
)
def test_project_rule(changes: dict[str, Any], expected: list[str]) -> None:
    assert errors_of(patched(project(), changes)) == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [pytest.param(c, e, id=name) for name, c, e in PROJECT_CASES if "kind" not in c],
)
def test_project_rule_with_kind_argument(changes: dict[str, Any], expected: list[str]) -> None:
    # The server passes the kind of the URL; the rules are the same.
    assert errors_of(patched(project(), changes), kind="Project") == expected


NODE_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("name bad", {"metadata.name": "Edge_01"}, [f"metadata.name: {DNS}"]),
    ("name missing", {"metadata.name": DELETE}, ["metadata.name: required"]),
    ("hostname underscore", {"spec.hostname": "edge_01"}, [f"spec.hostname: {MSG_NODE_HOSTNAME}"]),
    (
        "hostname leading hyphen",
        {"spec.hostname": "-edge"},
        [f"spec.hostname: {MSG_NODE_HOSTNAME}"],
    ),
    ("hostname empty", {"spec.hostname": ""}, [f"spec.hostname: {MSG_NODE_HOSTNAME}"]),
    (
        "hostname too long",
        {"spec.hostname": ("a" * 63 + ".") * 4},
        [f"spec.hostname: {MSG_NODE_HOSTNAME}"],
    ),
    ("hostname number", {"spec.hostname": 1}, ["spec.hostname: must be a string"]),
    (
        "unschedulable string",
        {"spec.unschedulable": "yes"},
        ["spec.unschedulable: must be a boolean"],
    ),
    ("unknown spec field", {"spec.taints": []}, ["spec.taints: unknown field"]),
    (
        "state bad",
        {"status.state": "Up"},
        ['status.state: must be one of "Ready", "NotReady", "Draining"'],
    ),
    ("agentPort 0", {"status.network.agentPort": 0}, [f"status.network.agentPort: {PORT}"]),
    ("agentPort 65536", {"status.network.agentPort": 65536}, [f"status.network.agentPort: {PORT}"]),
    ("proxyPort 70000", {"status.network.proxyPort": 70000}, [f"status.network.proxyPort: {PORT}"]),
    (
        "agentPort string",
        {"status.network.agentPort": "9090"},
        ["status.network.agentPort: must be an integer"],
    ),
    (
        "network mode bad",
        {"status.network.mode": "Relay"},
        ['status.network.mode: must be one of "Direct", "DERP"'],
    ),
    (
        "capacity number",
        {"status.capacity": {"cpu": 4}},
        ["status.capacity[cpu]: must be a string"],
    ),
    (
        "lastHeartbeat naive",
        {"status.lastHeartbeat": "2026-01-01 00:00:00"},
        [f"status.lastHeartbeat: {MSG_TIMESTAMP}"],
    ),
    (
        "label key bad",
        {"metadata.labels": {"zone/": "x"}},
        [f"metadata.labels[zone/]: {MSG_LABEL_KEY}"],
    ),
    ("kind missing", {"kind": DELETE}, ["kind: required"]),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [pytest.param(c, e, id=name) for name, c, e in NODE_CASES]
)
def test_node_rule(changes: dict[str, Any], expected: list[str]) -> None:
    assert errors_of(patched(node(), changes), kind="Node") == expected


def test_node_without_spec_is_valid() -> None:
    data = patched(node(), {"spec": DELETE})
    assert isinstance(parse_resource(data), Node)


# --------------------------------------------------------------------------------------------
# Kind handling.


def test_kind_argument_mismatch_validates_as_the_requested_kind() -> None:
    # A Node manifest posted to /projects: wrong kind, and judged as a Project.
    assert errors_of(node(), kind="Project") == [
        'kind: must be "Project"',
        "spec.hostname: unknown field",
        "spec.unschedulable: unknown field",
        "spec.services: must have at least one service",
    ]


def test_project_posted_as_node() -> None:
    assert errors_of(project(), kind="Node") == [
        'kind: must be "Node"',
        "spec.services: unknown field",
    ]


def test_unknown_kind_still_checks_metadata() -> None:
    data = patched(project(), {"kind": "Service", "metadata.name": "Bad", "metadata.x": 1})
    assert errors_of(data) == [
        'kind: must be one of "Project", "Node"',
        f"metadata.name: {DNS}",
        "metadata.x: unknown field",
    ]
    assert errors_of({"kind": "Pod"}) == [
        "apiVersion: required",
        'kind: must be one of "Project", "Node"',
        "metadata: required",
    ]


def test_unknown_kind_argument_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        parse_resource(project(), kind="Pod")


# --------------------------------------------------------------------------------------------
# Many errors at once, in document order, with types and rules mixed.


def test_every_error_is_reported_at_once() -> None:
    data = {
        "kind": "Project",
        "metadata": {"name": "Bad_Name", "labels": {"ok": "yes", "bad key": "v"}},
        "spec": {
            "services": [
                {
                    "name": "web",
                    "image": "nginx:alpine",
                    "imagee": "typo",
                    "env": [{"name": "A"}, {"name": "A"}, {"name": "9"}],
                    "volumeMounts": [{"name": "logs", "mountPath": "logs"}],
                    "ports": [{"containerPort": "80", "hostPort": 80}],
                },
                {"name": "web", "image": "", "ports": [{"containerPort": 81, "hostPort": 80}]},
                {"name": "Worker", "image": "Busybox"},
            ],
            "volumes": [{"name": "data", "type": "Persistent"}, {"name": "data"}],
            "ingress": [
                {"name": "web", "host": "Blog", "target": {"service": "nope", "port": 0}},
            ],
            "expireAt": "2026-04-07T00:00:00",
        },
        "status": {"phase": "Exploded"},
    }
    assert errors_of(data) == [
        "apiVersion: required",
        f"metadata.name: {DNS}",
        f"metadata.labels[bad key]: {MSG_LABEL_KEY}",
        "spec.services[0].imagee: unknown field",
        'spec.services[0].env[1].name: duplicate environment variable "A"',
        f"spec.services[0].env[2].name: {MSG_ENV_NAME}",
        'spec.services[0].volumeMounts[0].name: volume "logs" is not declared in spec.volumes',
        f"spec.services[0].volumeMounts[0].mountPath: {MSG_ABSOLUTE_PATH}",
        "spec.services[0].ports[0].containerPort: must be an integer",
        'spec.services[1].name: duplicate service name "web"',
        "spec.services[1].image: must not be empty",
        "spec.services[1].ports[0].hostPort: duplicate host port 80/tcp",
        f"spec.services[2].name: {DNS}",
        f"spec.services[2].image: {MSG_IMAGE}",
        'spec.volumes[0].type: must be "Ephemeral"',
        'spec.volumes[1].name: duplicate volume name "data"',
        f"spec.ingress[0].host: {MSG_HOSTNAME}",
        'spec.ingress[0].target.service: service "nope" is not declared in spec.services',
        f"spec.ingress[0].target.port: {PORT}",
        f"spec.expireAt: {MSG_TIMESTAMP}",
        f"status.phase: must be one of {PHASES}",
    ]


def test_rules_are_checked_even_where_types_fail() -> None:
    # services[0] fails to parse; the duplicate name and the undeclared volume of the other
    # services are still reported.
    data = project()
    data["spec"]["services"] = [
        {"name": "web", "image": 1},
        {"name": "web", "image": "redis", "volumeMounts": [{"name": "x", "mountPath": "/x"}]},
    ]
    assert errors_of(data) == [
        "spec.services[0].image: must be a string",
        'spec.services[1].name: duplicate service name "web"',
        'spec.services[1].volumeMounts[0].name: volume "x" is not declared in spec.volumes',
    ]


def test_references_to_malformed_lists_are_not_judged() -> None:
    # When spec.volumes cannot be read, "not declared" would be noise.
    data = project()
    data["spec"]["volumes"] = {"data": {}}
    data["spec"]["services"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/d"}]
    assert errors_of(data) == ["spec.volumes: must be a list"]
    data["spec"]["volumes"] = [{"name": "data"}, {"type": "Ephemeral"}]
    assert errors_of(data) == ["spec.volumes[1].name: required"]
    data = project()
    data["spec"]["services"].append({"image": "redis"})
    data["spec"]["ingress"] = [{"name": "i", "host": "a", "target": {"service": "x", "port": 1}}]
    assert errors_of(data) == ["spec.services[1].name: required"]


def test_error_order_follows_the_document() -> None:
    # Keys in another order than the model's fields: errors follow the manifest.
    data = {
        "spec": {"services": [{"image": "", "name": "A"}]},
        "metadata": {"name": "X"},
        "kind": "Project",
        "apiVersion": "caravanserai/v1",
    }
    assert errors_of(data) == [
        "spec.services[0].image: must not be empty",
        f"spec.services[0].name: {DNS}",
        f"metadata.name: {DNS}",
    ]


# --------------------------------------------------------------------------------------------
# The exception itself.


def test_invalid_carries_a_problem_document() -> None:
    with pytest.raises(Invalid) as info:
        parse_resource(patched(project(), {"spec.services[0].image": ""}))
    err = info.value
    assert err.status == 422
    assert err.detail == 'Project "demo" is invalid'
    problem = err.to_problem()
    assert problem.status == 422
    assert problem.errors == [
        FieldError(field="spec.services[0].image", message="must not be empty")
    ]
    assert "spec.services[0].image: must not be empty" in str(err)


def test_invalid_detail_without_a_usable_name() -> None:
    with pytest.raises(Invalid) as info:
        parse_resource(patched(project(), {"metadata.name": "Not Valid"}))
    assert info.value.detail == "Project is invalid"
    with pytest.raises(Invalid) as info:
        parse_resource({"kind": "Pod", "metadata": {"name": "x"}})
    assert info.value.detail == 'manifest "x" is invalid'


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ([], "the manifest must be a JSON object, not an array"),
        ("apiVersion: v1", "the manifest must be a JSON object, not a string"),
        (None, "the manifest must be a JSON object, not null"),
        (3, "the manifest must be a JSON object, not a number"),
        (True, "the manifest must be a JSON object, not a boolean"),
    ],
)
def test_not_an_object_is_a_bad_request(data: Any, detail: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_resource(data)
    assert info.value.status == 400
    assert info.value.detail == detail


def test_absurd_nesting_is_a_bad_request_not_a_crash() -> None:
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    with pytest.raises(BadRequest, match="nests deeper"):
        parse_resource(project(extra=deep))
    cyclic: list[Any] = []
    cyclic.append(cyclic)  # YAML anchors can build these
    with pytest.raises(BadRequest):
        parse_resource(project(extra=cyclic))


@pytest.mark.parametrize(
    "junk",
    [
        {"metadata": None, "spec": None, "status": None},
        {"metadata": [], "spec": "x", "status": 5},
        {"spec": {"services": [None, 1, "x", [], {"name": None, "image": None}]}},
        {
            "spec": {
                "services": [
                    {
                        "name": "a",
                        "image": "b",
                        "env": [None],
                        "volumeMounts": [1],
                        "ports": [None, {"containerPort": None}],
                    }
                ],
                "volumes": [None],
                "ingress": [None, {"target": None}, {"target": {"port": []}}],
            }
        },
        {"metadata": {"name": "x", "labels": None, "annotations": {"a": None}}},
        {"status": {"network": None}, "spec": {"hostname": None}},
        {"apiVersion": None, "kind": None},
        {"kind": ["Project"]},
        {"kind": {"a": 1}},
        {"metadata": {"name": "x", "labels": {"a": {"nested": object()}}}},
    ],
)
@pytest.mark.parametrize("kind", [None, "Project", "Node"])
def test_junk_never_crashes(junk: dict[str, Any], kind: str | None) -> None:
    data = {"apiVersion": "caravanserai/v1", "kind": kind or "Project", **junk}
    with pytest.raises(Invalid) as info:
        parse_resource(data, kind=kind)
    assert info.value.errors


# --------------------------------------------------------------------------------------------
# validate_project / validate_node on models agree with parse_resource.

SEMANTIC_ONLY = [
    (name, changes, expected)
    for name, changes, expected in PROJECT_CASES
    if not any(
        m in e
        for e in expected
        for m in (
            "required",
            "must be a",
            "must be an",
            "unknown field",
            "must be one of",
            'must be "',
            MSG_TIMESTAMP,
        )
    )
]


def test_there_are_semantic_cases() -> None:
    assert len(SEMANTIC_ONLY) > 30


@pytest.mark.parametrize(
    ("changes", "expected"),
    [pytest.param(c, e, id=name) for name, c, e in SEMANTIC_ONLY],
)
def test_validate_project_on_a_model(changes: dict[str, Any], expected: list[str]) -> None:
    data = patched(project(), changes)
    model = Project.model_validate({k: v for k, v in data.items()})
    assert [str(e) for e in validate_project(model)] == expected


def test_validate_project_on_a_model_built_in_python() -> None:
    from caravanserai.api import ObjectMeta, ProjectSpec, ServiceDef

    p = Project(
        metadata=ObjectMeta(name="x"),
        spec=ProjectSpec(
            services=[ServiceDef(name="a", image="redis"), ServiceDef(name="a", image="")]
        ),
    )
    assert [str(e) for e in validate_project(p)] == [
        'spec.services[1].name: duplicate service name "a"',
        "spec.services[1].image: must not be empty",
    ]
    empty = Project(metadata=ObjectMeta(name="x"), spec=ProjectSpec())
    assert [str(e) for e in validate_project(empty)] == [
        "spec.services: must have at least one service"
    ]


def test_validate_node_on_a_model() -> None:
    n = Node.model_validate(patched(node(), {"spec.hostname": "bad_host"}))
    assert [str(e) for e in validate_node(n)] == [f"spec.hostname: {MSG_NODE_HOSTNAME}"]
    # Ports and the address are refused by the model itself (no write path can store them).
    with pytest.raises(ValidationError):
        Node.model_validate(patched(node(), {"status.network.proxyPort": 0}))
    assert validate_node(Node.model_validate(node())) == []
