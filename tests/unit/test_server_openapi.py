"""The OpenAPI document is generated from the route table and the models, and is coherent."""

from __future__ import annotations

import json
from typing import Any

from caravanserai.server.app import route_table
from caravanserai.server.openapi import build_openapi


def refs(node: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            out.add(node["$ref"])
        for value in node.values():
            out |= refs(value)
    elif isinstance(node, list):
        for value in node:
            out |= refs(value)
    return out


def test_every_route_is_documented_with_problem_responses() -> None:
    routes = route_table()
    doc = build_openapi(routes)
    assert doc["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert documented == {(r.method, r.path) for r in routes}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["operationId"] and op["responses"], (method, path)
            assert "500" in op["responses"]
            problem = op["responses"]["500"]["content"]["application/problem+json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/Problem"}


def test_schemas_come_from_the_models_and_every_ref_resolves() -> None:
    doc = build_openapi(route_table())
    schemas = doc["components"]["schemas"]
    for name in ("Project", "ProjectList", "Node", "NodeList", "Heartbeat", "PhasePatch",
                 "Problem", "FieldError", "WatchEvent", "VersionInfo"):
        assert name in schemas, name
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    # camelCase on the wire, unknown fields rejected (as the models).
    project = schemas["Project"]
    assert set(project["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert project["additionalProperties"] is False
    assert "nodeRef" in schemas["ProjectStatus"]["properties"]
    json.dumps(doc)  # serialisable as is


def test_list_operations_document_watch_and_filters() -> None:
    doc = build_openapi(route_table())
    op = doc["paths"]["/api/v1/projects"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    expected = {"watch", "resourceVersion", "allowWatchBookmarks", "timeoutSeconds",
                "labelSelector", "fieldSelector", "limit", "continue", "phase", "nodeRef"}
    assert expected <= set(params)
    assert params["phase"]["schema"]["type"] == "array" and params["phase"]["explode"] is True
    content = op["responses"]["200"]["content"]
    assert set(content) == {"application/json", "application/x-ndjson"}
    assert "410" in op["responses"]
    node_params = {p["name"] for p in doc["paths"]["/api/v1/nodes"]["get"]["parameters"]}
    assert "phase" not in node_params


def test_write_bodies_say_what_the_server_takes() -> None:
    doc = build_openapi(route_table())
    schemas = doc["components"]["schemas"]

    def body(path: str, method: str, media: str = "application/json") -> dict[str, Any]:
        return doc["paths"][path][method]["requestBody"]["content"][media]["schema"]  # type: ignore[no-any-return]

    # PUT: the URL names the object, so metadata (and its name) may be left out.
    assert body("/api/v1/projects/{name}", "put") == {
        "$ref": "#/components/schemas/ProjectReplace"
    }
    assert "metadata" not in schemas["ProjectReplace"]["required"]
    assert "name" not in schemas["ObjectMetaReplace"].get("required", [])
    assert "name" in schemas["ObjectMeta"]["required"]
    # PATCH: a closed merge patch of metadata and spec; null removes what may be removed.
    patch = body("/api/v1/projects/{name}", "patch", "application/merge-patch+json")
    assert patch == {"$ref": "#/components/schemas/ProjectMergePatch"}
    merge = schemas["ProjectMergePatch"]
    assert merge["additionalProperties"] is False
    assert set(merge["properties"]) == {"apiVersion", "kind", "metadata", "spec"}
    spec = schemas["ProjectSpecPatch"]
    assert "required" not in spec
    assert spec["properties"]["services"]["type"] == "array"  # never null: it is required
    assert {"type": "null"} in spec["properties"]["volumes"]["anyOf"]
    # nodeRef only with phase Scheduled.
    assert schemas["PhasePatch"]["anyOf"]


def test_name_parameters_are_dns_labels_and_creates_link_to_the_object() -> None:
    doc = build_openapi(route_table())
    for path, item in doc["paths"].items():
        for op in item.values():
            for param in op.get("parameters", []):
                # Token names include node credentials ("node:NAME") and Event names are DNS
                # subdomains: only these kinds' names are DNS labels.
                if path.startswith(("/api/v1/tokens/", "/api/v1/events/")):
                    continue
                if param["in"] == "path" and param["name"] == "name":
                    assert param["schema"]["pattern"].startswith("^[a-z0-9]"), path
    links = doc["paths"]["/api/v1/projects"]["post"]["responses"]["201"]["links"]
    assert {"getProject", "replaceProject", "patchProject", "deleteProject"} <= set(links)
    assert links["getProject"]["parameters"] == {"name": "$response.body#/metadata/name"}


def test_selector_parameters_publish_the_parsers_grammar() -> None:
    doc = build_openapi(route_table())
    params = {p["name"]: p for p in doc["paths"]["/api/v1/nodes"]["get"]["parameters"]}
    assert params["labelSelector"]["schema"]["pattern"].startswith("^(?:")
    assert params["fieldSelector"]["schema"]["pattern"].startswith("^(?:")
