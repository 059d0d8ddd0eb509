"""The manifests in examples/ are valid and run offline (their images are built locally).

They run for real in tests/e2e/test_examples_run.py and tests/e2e/test_quickstart.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from caravanserai.api import Node, Project
from caravanserai.api.validation import parse_resource, validate_node, validate_project

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
IMAGES_DIR = REPO / "hack" / "example-images"
FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def load(name: str) -> Any:
    return YAML(typ="safe", pure=True).load((EXAMPLES / name).read_text(encoding="utf-8"))


def parse(name: str) -> Project | Node:
    data = load(name)
    return parse_resource(data, kind=data["kind"])


def test_the_examples_are_all_here() -> None:
    assert set(FILES) == {"hello.yaml", "blog.yaml", "preview.yaml", "node.yaml"}


@pytest.mark.parametrize("name", FILES)
def test_example_is_valid(name: str) -> None:
    resource = parse(name)
    if isinstance(resource, Project):
        assert validate_project(resource) == []
    else:
        assert validate_node(resource) == []


@pytest.mark.parametrize("name", [n for n in FILES if load(n)["kind"] == "Project"])
def test_example_images_are_built_locally(name: str) -> None:
    """No registry on these machines: every image is one hack/build-example-images.sh
    builds (cara-example/NAME:latest from hack/example-images/NAME)."""
    project = parse(name)
    assert isinstance(project, Project)
    built = {p.name for p in IMAGES_DIR.iterdir() if (p / "Dockerfile").is_file()}
    for service in project.spec.services:
        repo, _, tag = service.image.partition(":")
        assert repo.startswith("cara-example/"), service.image
        assert repo.removeprefix("cara-example/") in built, service.image
        assert tag == "latest"


def test_blog_is_multi_service_with_shared_volume_and_ingress() -> None:
    project = parse("blog.yaml")
    assert isinstance(project, Project)
    services = {s.name: s for s in project.spec.services}
    assert set(services) == {"api", "app", "web"}
    # app reaches api by its service name.
    env = {e.name: e.value for e in services["app"].env}
    assert env["SOURCE_URL"] == "http://api/"
    # One Ephemeral volume, written by app and served by web.
    assert [(v.name, str(v.type)) for v in project.spec.volumes] == [("content", "Ephemeral")]
    mounts = {s.name: [m.name for m in s.volume_mounts] for s in project.spec.services}
    assert mounts["app"] == mounts["web"] == ["content"]
    hosts = [i.host for i in project.spec.ingress]
    assert "blog.example.com" in hosts
    assert any("." not in h for h in hosts)  # a short host: {host}.{environment}.{domain}
    assert all(i.target.service == "web" for i in project.spec.ingress)


def test_preview_has_an_expiry() -> None:
    project = parse("preview.yaml")
    assert isinstance(project, Project)
    assert project.spec.expire_at is not None
    # The file's own time is far enough ahead that applying it as is works for years; the
    # e2e test sets a time seconds ahead to see the gc controller delete it.
    assert project.spec.expire_at > datetime(2026, 1, 1, tzinfo=UTC)
    assert "must be in the future" in (EXAMPLES / "preview.yaml").read_text()


def test_node_example() -> None:
    node = parse("node.yaml")
    assert isinstance(node, Node)
    assert node.metadata.name == "edge-node-01"
    assert node.spec.unschedulable is False
