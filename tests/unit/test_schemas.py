"""The published JSON Schemas: fresh, well-formed, and in step with the validator."""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from ruamel.yaml import YAML

from caravanserai.api import Invalid
from caravanserai.api.jsonschema import generate, node_schema, project_schema
from caravanserai.api.validation import parse_resource

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
SEEDS = sorted((ROOT / "examples" / "seeds").glob("*.yaml"))
REGENERATE = "run `.venv/bin/python hack/gen-schemas.py` and commit schemas/"


def load_gen_script() -> Any:
    spec = importlib.util.spec_from_file_location("gen_schemas", ROOT / "hack" / "gen-schemas.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def validator(kind: str) -> Any:
    schema = json.loads((SCHEMAS / f"{kind.lower()}.json").read_text(encoding="utf-8"))
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)


# --------------------------------------------------------------------------------------------
# Freshness.


@pytest.mark.parametrize("name", ["project.json", "node.json"])
def test_checked_in_schema_is_fresh(name: str) -> None:
    path = SCHEMAS / name
    assert path.exists(), f"schemas/{name} is missing: {REGENERATE}"
    fresh = generate()[name]
    assert path.read_text(encoding="utf-8") == fresh, f"schemas/{name} is stale: {REGENERATE}"


def test_gen_script_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = load_gen_script()
    assert script.main(["--check"]) == 0  # the checked-in files
    # An empty folder: --check reports and writes nothing.
    assert script.main(["--check", "--dir", str(tmp_path)]) == 1
    assert list(tmp_path.iterdir()) == []
    assert "hack/gen-schemas.py" in capsys.readouterr().err
    # Without --check it writes what generate() produces; then --check passes.
    assert script.main(["--dir", str(tmp_path)]) == 0
    for name, text in generate().items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text
    assert script.main(["--check", "--dir", str(tmp_path)]) == 0
    # A stale file is caught.
    (tmp_path / "node.json").write_text("{}\n", encoding="utf-8")
    assert script.main(["--check", "--dir", str(tmp_path)]) == 1


def test_generation_is_deterministic() -> None:
    assert generate() == generate()


# --------------------------------------------------------------------------------------------
# Shape.


def walk(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from walk(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from walk(value)


@pytest.mark.parametrize(
    ("schema", "file_name", "root"),
    [(project_schema(), "project.json", "Project"), (node_schema(), "node.json", "Node")],
)
def test_schema_shape(schema: dict[str, Any], file_name: str, root: str) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == file_name
    assert schema["$ref"] == f"#/$defs/{root}"
    assert jsonschema_rs.meta.is_valid(schema)
    defs = schema["$defs"]
    assert defs[root]["required"][:3] == ["apiVersion", "kind", "metadata"]
    assert defs[root]["properties"]["apiVersion"]["const"] == "caravanserai/v1"
    assert defs[root]["properties"]["kind"]["const"] == root
    for name, definition in defs.items():
        assert definition["title"] == name
        if definition.get("type") == "object":
            assert definition["additionalProperties"] is False, name
            assert definition.get("description"), f"{name} has no description"
            for prop in definition["properties"].values():
                assert "title" not in prop  # pydantic's generated "Mountpath" titles are gone
    # Every object with named properties is closed, at any depth.
    for node in walk(schema):
        if "properties" in node:
            assert node.get("additionalProperties") is False
    # Every reference resolves.
    for node in walk(schema):
        if "$ref" in node:
            assert node["$ref"].removeprefix("#/$defs/") in defs


def test_project_schema_mirrors_validation_rules() -> None:
    defs = project_schema()["$defs"]
    assert defs["ProjectSpec"]["required"] == ["services"]
    assert defs["ProjectSpec"]["properties"]["services"]["minItems"] == 1
    assert defs["ObjectMeta"]["properties"]["name"]["maxLength"] == 63
    assert defs["PortMapping"]["properties"]["containerPort"]["maximum"] == 65535
    host_port = defs["PortMapping"]["properties"]["hostPort"]["anyOf"]
    assert {"type": "integer", "minimum": 1, "maximum": 65535} in host_port
    assert defs["VolumeDef"]["properties"]["type"]["$ref"] == "#/$defs/VolumeType"
    assert defs["VolumeType"]["enum"] == ["Ephemeral"]
    assert defs["IngressScope"]["enum"] == ["Internal"]
    assert defs["Protocol"]["enum"] == ["tcp", "udp"]


# --------------------------------------------------------------------------------------------
# Agreement with the validator.


def load(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def test_there_are_seeds() -> None:
    assert len(SEEDS) >= 7


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_seed_manifest_validates_against_schema(path: Path) -> None:
    data = load(path)
    errors = [
        f"{list(e.instance_path)}: {e.message}" for e in validator(data["kind"]).iter_errors(data)
    ]
    assert errors == []


BASE: dict[str, Any] = {
    "apiVersion": "caravanserai/v1",
    "kind": "Project",
    "metadata": {"name": "demo", "labels": {"app": "web"}},
    "spec": {
        "services": [
            {
                "name": "web",
                "image": "nginx:alpine",
                "env": [{"name": "A", "value": "1"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "ports": [{"containerPort": 80, "hostPort": 8080}],
            }
        ],
        "volumes": [{"name": "data", "type": "Ephemeral"}],
        "ingress": [
            {"name": "web", "host": "blog.example.com", "target": {"service": "web", "port": 80}}
        ],
        "expireAt": "2026-04-07T00:00:00Z",
    },
}


def mutate(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


SVC = ("spec", "services", 0)

# Manifests both the validator and the schema must reject.
REJECTED = [
    ("no apiVersion", ("apiVersion",), None),
    ("wrong apiVersion", ("apiVersion",), "v1"),
    ("no kind", ("kind",), None),
    ("wrong kind", ("kind",), "Pod"),
    ("no metadata", ("metadata",), None),
    ("unknown top-level field", ("extra",), 1),
    ("name not a DNS label", ("metadata", "name"), "Demo_1"),
    ("name too long", ("metadata", "name"), "a" * 64),
    ("label key", ("metadata", "labels"), {"a/b/c": "x"}),
    ("label value", ("metadata", "labels"), {"a": "b c"}),
    ("no services", ("spec", "services"), []),
    ("services absent", ("spec", "services"), None),
    ("unknown service field", (*SVC, "imagee"), "x"),
    ("snake_case field", (*SVC, "volume_mounts"), []),
    ("service name", (*SVC, "name"), "Web"),
    ("image empty", (*SVC, "image"), ""),
    ("image uppercase", (*SVC, "image"), "Nginx"),
    ("image missing", (*SVC, "image"), None),
    ("env name", (*SVC, "env"), [{"name": "1A"}]),
    ("env value number", (*SVC, "env"), [{"name": "A", "value": 1}]),
    ("relative mountPath", (*SVC, "volumeMounts"), [{"name": "data", "mountPath": "d"}]),
    ("containerPort 0", (*SVC, "ports"), [{"containerPort": 0}]),
    ("hostPort 65536", (*SVC, "ports"), [{"containerPort": 1, "hostPort": 65536}]),
    ("port as string", (*SVC, "ports"), [{"containerPort": "80"}]),
    ("protocol", (*SVC, "ports"), [{"containerPort": 80, "protocol": "sctp"}]),
    ("command string", (*SVC, "command"), "echo"),
    ("volume type", ("spec", "volumes"), [{"name": "data", "type": "HostPath"}]),
    ("volume name", ("spec", "volumes"), [{"name": "Data"}]),
    ("ingress host", ("spec", "ingress", 0, "host"), "Blog.example.com"),
    ("ingress port", ("spec", "ingress", 0, "target", "port"), 0),
    ("ingress scope", ("spec", "ingress", 0, "access"), {"scope": "Public"}),
    ("naive expireAt", ("spec", "expireAt"), "2026-04-07T00:00:00"),
    ("expireAt words", ("spec", "expireAt"), "tomorrow"),
    ("status phase", ("status",), {"phase": "Bogus"}),
]


@pytest.mark.parametrize(
    ("path", "value"), [pytest.param(p, v, id=name) for name, p, v in REJECTED]
)
def test_schema_and_validator_both_reject(path: tuple[Any, ...], value: Any) -> None:
    data = mutate(path, value)
    with pytest.raises(Invalid):
        parse_resource(data)
    assert not validator("Project").is_valid(data)


def test_base_manifest_is_valid_for_both() -> None:
    parse_resource(copy.deepcopy(BASE))
    assert validator("Project").is_valid(BASE)


def test_node_schema_rejects_what_the_validator_rejects() -> None:
    base = load(ROOT / "examples" / "seeds" / "reference-node.yaml")
    v = validator("Node")
    assert v.is_valid(base)
    for path, value in [
        (("spec", "hostname"), "edge_01"),
        (("spec", "unschedulable"), "yes"),
        (("status",), {"state": "Up"}),
        (("status",), {"network": {"agentPort": 0}}),
        (("spec", "taints"), []),
        (("metadata", "name"), "Edge"),
    ]:
        data = copy.deepcopy(base)
        node: Any = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(Invalid):
            parse_resource(data)
        assert not v.is_valid(data), path
