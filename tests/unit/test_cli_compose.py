"""Compose files as input: detection, naming, interpolation, mapping, and every unmapped key
reported per service (error or warning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from caravanserai.api.validation import parse_resource
from cli.compose import ComposeError, convert, interpolate, is_compose, project_name_of
from cli.main import cli

ENV = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(("text", "expected"), [
    ("$SET", "value"), ("${SET}", "value"), ("${UNSET}", ""), ("$$SET", "$SET"),
    ("${UNSET:-dflt}", "dflt"), ("${EMPTY:-dflt}", "dflt"), ("${EMPTY-dflt}", ""),
    ("${UNSET-dflt}", "dflt"), ("${SET:+alt}", "alt"), ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"), ("${UNSET:-${SET}}", "value"), ("a-${SET}-b", "a-value-b"),
])
def test_interpolation_as_compose(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


def test_required_variable() -> None:
    with pytest.raises(ComposeError, match="required variable UNSET is missing a value: say"):
        interpolate({"a": "${UNSET:?say}"}, ENV)
    with pytest.raises(ComposeError, match="invalid interpolation"):
        interpolate("${", ENV)


def test_detection_and_name() -> None:
    assert is_compose({"services": {"a": {}}})
    assert not is_compose({"apiVersion": "caravanserai/v1", "services": {}})
    assert not is_compose({"services": []})
    d = Path("/tmp/My_App")
    assert project_name_of("Shop", {"name": "x"}, d) == "shop"
    assert project_name_of(None, {"name": "Blog_1"}, d) == "blog-1"
    assert project_name_of(None, {}, d) == "my-app"


def conv(doc: dict[str, Any], tmp_path: Path, **env: str) -> Any:
    return convert(doc, project_name=None, directory=tmp_path, environ=env)


def test_wordpress_like_file_maps_and_validates(tmp_path: Path) -> None:
    (tmp_path / "db.env").write_text("ROOT_PASSWORD=secret\n")
    doc = {
        "name": "wp",
        "services": {
            "db": {"image": "mariadb:11", "restart": "always", "env_file": "db.env",
                   "environment": ["MARIADB_DATABASE=wp", "FROM_SHELL", "UNSET_ONE"],
                   "volumes": ["db_data:/var/lib/mysql"],
                   "healthcheck": {"test": "mysqladmin ping", "interval": "10s",
                                   "start_period": "30s", "retries": 5},
                   "mem_limit": "512m", "expose": ["3306"]},
            "wordpress": {
                "image": "wordpress:6", "command": "php -S 0.0.0.0:80 'a b'",
                "depends_on": {"db": {"condition": "service_healthy", "restart": True}},
                "ports": ["${PORT:-8080}:80", {"target": 443, "published": "8443"}],
                "environment": {"WORDPRESS_DB_HOST": "db", "DEBUG": True, "N": 3},
                "deploy": {"resources": {"limits": {"cpus": "0.5", "memory": "1G"},
                                         "reservations": {"memory": "256M"}}},
                "labels": {"tier": "front"},
            },
        },
        "volumes": {"db_data": None},
        "x-common": {"whatever": 1},
    }
    out = conv(doc, tmp_path, FROM_SHELL="shell", PORT="9000")
    assert out.errors == []
    assert 'service "wordpress": depends_on: db: restart: ignored' in out.warnings
    project = parse_resource(out.manifest)
    db, wp = project.spec.services
    assert [(e.name, e.value) for e in db.env] == [
        ("ROOT_PASSWORD", "secret"), ("MARIADB_DATABASE", "wp"), ("FROM_SHELL", "shell")]
    assert db.healthcheck is not None and db.healthcheck.test == ["CMD-SHELL", "mysqladmin ping"]
    assert db.healthcheck.start_period == "30s"
    assert db.resources is not None and db.resources.limits is not None
    assert db.resources.limits.memory == "512Mi"
    assert [(p.container_port, p.host_port) for p in db.ports] == [(3306, None)]
    assert wp.command == ["php", "-S", "0.0.0.0:80", "a b"]
    assert [(p.container_port, p.host_port) for p in wp.ports] == [(80, 9000), (443, 8443)]
    assert {e.name: e.value for e in wp.env} == {
        "WORDPRESS_DB_HOST": "db", "DEBUG": "true", "N": "3"}
    assert wp.depends_on is not None and wp.depends_on[0].condition.value == "service_healthy"
    assert wp.resources is not None and wp.resources.requests is not None
    assert wp.resources.requests.memory == "256Mi"  # Compose sizes are binary
    assert str(wp.restart) == "None" or wp.restart is None
    assert project.metadata.name == "wp" and project.metadata.labels == {"tier": "front"}
    assert [(v.name, v.type.value) for v in project.spec.volumes] == [("db-data", "Ephemeral")]


def test_unsupported_keys_named_per_service(tmp_path: Path) -> None:
    out = conv({"services": {"web": {
        "build": ".", "privileged": True, "cap_add": ["NET_ADMIN"], "network_mode": "host",
        "volumes": ["./src:/app", "cache:/c"], "ports": ["127.0.0.1:80:80", "8000-8010:80"],
        "container_name": "x", "tty": True, "secrets": ["s"], "frobnicate": 1,
        "restart": "on-failure:3",
    }}, "secrets": {"s": {"file": "x"}}}, tmp_path)
    assert 'service "web": build: not supported (build the image and use image:)' in out.errors
    for key in ("privileged", "cap_add", "network_mode", "secrets"):
        assert any(e.startswith(f'service "web": {key}: ') for e in out.errors), key
    assert any("bind mount ./src" in e for e in out.errors)
    assert any('"cache" is not declared' in e for e in out.errors)
    assert any("binding to 127.0.0.1" in e for e in out.errors)
    assert any("8000-8010:80" in e for e in out.errors)
    assert "secrets: not supported" in out.errors
    for key in ("container_name", "tty"):
        assert any(w.startswith(f'service "web": {key}: ') for w in out.warnings), key
    assert 'service "web": frobnicate: unknown key, ignored' in out.warnings
    assert any("retry limit 3 is ignored" in w for w in out.warnings)


def test_convert_and_apply_commands(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    image: nginx:alpine\n    container_name: x\n")
    result = CliRunner().invoke(cli, ["convert", "-f", str(tmp_path / "compose.yaml"),
                                      "-p", "demo"])
    assert result.exit_code == 0, result.output
    assert "name: demo" in result.stdout and "image: nginx:alpine" in result.stdout
    assert "container_name: ignored" in result.stderr
    (tmp_path / "bad.yaml").write_text("services:\n  web:\n    build: .\n")
    result = CliRunner().invoke(cli, ["apply", "-f", str(tmp_path / "bad.yaml"),
                                      "--server", "http://127.0.0.1:9"])
    assert result.exit_code != 0
    assert 'service "web": build: not supported' in result.output
    assert "Traceback" not in result.output


def test_the_compose_example_converts_cleanly() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "compose" / "compose.yaml"
    from ruamel.yaml import YAML

    out = convert(YAML(typ="safe", pure=True).load(example.read_text()), project_name=None,
                  directory=example.parent, environ={})
    assert out.errors == []
    project = parse_resource(out.manifest)
    assert project.metadata.name == "shop"
    assert all(s.image.startswith("cara-example/") for s in project.spec.services)
