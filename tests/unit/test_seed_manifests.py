"""Every manifest the user-facing documentation shows must be accepted as it is."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from caravanserai.api import Node, Project
from caravanserai.api.validation import parse_resource, validate_node, validate_project

SEEDS_DIR = Path(__file__).resolve().parents[2] / "examples" / "seeds"


def load(name: str) -> Any:
    return YAML(typ="safe", pure=True).load((SEEDS_DIR / name).read_text(encoding="utf-8"))


def test_every_seed_file_is_covered() -> None:
    assert {p.name for p in SEEDS_DIR.glob("*.yaml")} == {
        "guide-project.yaml",
        "guide-wordpress.yaml",
        "guide-pr-preview-42.yaml",
        "api-nginx-demo.yaml",
        "reference-nginx-project.yaml",
        "reference-multi-service.yaml",
        "reference-node.yaml",
    }


@pytest.mark.parametrize("name", sorted(p.name for p in SEEDS_DIR.glob("*.yaml")))
def test_seed_parses_with_its_kind(name: str) -> None:
    data = load(name)
    resource = parse_resource(data, kind=data["kind"])
    assert resource.kind == data["kind"]
    if isinstance(resource, Project):
        assert validate_project(resource) == []
    else:
        assert validate_node(resource) == []
    # Everything the manifest said survives the round trip to the wire form.
    assert_subset(data, resource.to_wire())


def assert_subset(expected: Any, actual: Any, path: str = "") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} lost"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{path}[{i}]")
    else:
        assert expected == actual, path


def test_guide_project() -> None:
    p = parse_resource(load("guide-project.yaml"))
    assert isinstance(p, Project)
    assert p.metadata.name == "my-project"
    assert [(s.name, s.image) for s in p.spec.services] == [("web", "nginx:alpine")]
    assert [(e.name, e.value) for e in p.spec.services[0].env] == [("APP_ENV", "production")]
    assert p.spec.volumes == []


def test_guide_wordpress() -> None:
    p = parse_resource(load("guide-wordpress.yaml"))
    assert isinstance(p, Project)
    db, app = p.spec.services
    assert (db.name, db.image, app.name, app.image) == ("db", "mysql:8", "app", "wordpress:latest")
    assert [(m.name, m.mount_path) for m in db.volume_mounts] == [("mysql-data", "/var/lib/mysql")]
    assert [e.value for e in app.env] == ["db", "secret", "wp"]
    assert [(v.name, v.type) for v in p.spec.volumes] == [("mysql-data", "Ephemeral")]


def test_guide_expire_at() -> None:
    p = parse_resource(load("guide-pr-preview-42.yaml"))
    assert isinstance(p, Project)
    assert p.metadata.name == "pr-preview-42"
    assert p.spec.expire_at == datetime(2026, 4, 7, tzinfo=UTC)
    assert p.spec.services[0].image == "myapp:pr-42"
    assert p.to_wire()["spec"]["expireAt"] == "2026-04-07T00:00:00Z"  # type: ignore[index]


def test_api_curl_body() -> None:
    p = parse_resource(load("api-nginx-demo.yaml"), kind="Project")
    assert isinstance(p, Project)
    assert p.metadata.name == "nginx-demo"
    assert p.spec.services[0].image == "nginx:alpine"
    assert p.status.phase is None  # the server sets Pending, not the parser


def test_reference_multi_service_ingress() -> None:
    p = parse_resource(load("reference-multi-service.yaml"))
    assert isinstance(p, Project)
    assert [
        (i.name, i.host, i.target.service, i.target.port, i.access.scope) for i in p.spec.ingress
    ] == [
        ("web", "blog.example.com", "app", 80, "Internal"),
        ("admin", "admin", "app", 80, "Internal"),
    ]


def test_reference_node() -> None:
    n = parse_resource(load("reference-node.yaml"), kind="Node")
    assert isinstance(n, Node)
    assert n.metadata.name == "edge-node-01"
    assert n.metadata.labels == {"zone": "hsinchu"}
    assert n.spec.hostname == "edge-01.local"
    assert n.spec.unschedulable is False


def test_reference_nginx_project_equals_the_api_body() -> None:
    a = parse_resource(load("reference-nginx-project.yaml"))
    b = parse_resource(load("api-nginx-demo.yaml"))
    assert a == b
