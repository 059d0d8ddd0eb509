"""The OpenAPI 3.1 document, generated from the route table and the pydantic models.

Paths, parameters and responses come from :mod:`caravanserai.server.routing` specs (the
same table the router is built from); every body schema is the JSON Schema pydantic derives
from the api models (``model_json_schema``), so the document cannot disagree with what the
server validates and returns. Nothing here is written by hand but the prose.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import caravanserai
from caravanserai.api.base import API_VERSION
from caravanserai.api.jsonschema import constrain
from caravanserai.api.problems import PROBLEM_CONTENT_TYPE, Problem
from caravanserai.api.validation import NO_NUL_PATTERN
from caravanserai.server.routing import RouteSpec, Schema

REF = "#/components/schemas/{model}"

# Problems any route can answer: malformed query (400), 404 (unknown route or object),
# 405 (wrong method) are listed per route; 500 and 503 (timeout, shutting down) everywhere.
_PROBLEM_TITLES = {
    400: "Bad request: malformed body, query parameter or selector",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict: already exists, stale resourceVersion or a forbidden phase transition",
    410: "Gone: the revision was compacted out of the event log; relist",
    413: "Request body too large",
    415: "Unsupported media type (send application/json or application/yaml)",
    422: "Invalid object: `errors` names every bad field",
    500: "Internal error (details are in the server log)",
    503: "Unavailable: request timed out, database unreachable, or shutting down",
    504: "Too large resource version: the server has not reached the watch's revision "
    "(Retry-After: 1); relist if it persists",
}
_ALWAYS = (500, 503)


def _models_of(routes: list[RouteSpec]) -> list[type[BaseModel]]:
    seen: dict[type[BaseModel], None] = {Problem: None}

    def add(schema: Schema) -> None:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            seen[schema] = None

    for route in routes:
        add(route.body)
        for reply in route.replies:
            for schema in reply.content.values():
                add(schema)
    return list(seen)


def _schema_ref(schema: Schema, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    if schema is None:
        return {}
    if isinstance(schema, dict):
        return schema
    return refs[schema]


def _parameter(param: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": param.name,
        "in": param.location,
        "required": param.required or param.location == "path",
        "description": param.description,
    }
    schema = dict(param.schema)
    if schema.get("type") == "string" and not {"pattern", "enum", "format"} & schema.keys():
        # The server refuses NUL in a path or query parameter (400): say so.
        schema["pattern"] = f"^{NO_NUL_PATTERN}$"
    if param.repeated:
        out["schema"] = {"type": "array", "items": schema}
        out["style"] = "form"
        out["explode"] = True
    else:
        out["schema"] = schema
    return out


def _add_links(paths: dict[str, dict[str, Any]]) -> None:
    """OpenAPI links from each create (201) to the get, update, delete and subresource
    operations of the created object by name, so stateful testing (and tooling) can follow
    them: ``$response.body#/metadata/name`` feeds the ``name`` path parameter."""
    for path, operations in paths.items():
        created = operations.get("post", {}).get("responses", {}).get("201")
        if created is None:
            continue
        links: dict[str, Any] = {}
        for item_path, item_ops in paths.items():
            # The object and its status; not the streams (logs, port-forward need an agent).
            if item_path not in (f"{path}/{{name}}", f"{path}/{{name}}/status"):
                continue
            for method, op in sorted(item_ops.items()):
                if method in ("get", "put", "patch", "delete", "post"):
                    links[op["operationId"]] = {
                        "operationId": op["operationId"],
                        "parameters": {"name": "$response.body#/metadata/name"},
                    }
        if links:
            created["links"] = links


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if any(branch.get("type") == "null" for branch in schema.get("anyOf", [])):
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def _add_derived(schemas: dict[str, Any]) -> None:
    """Body schemas of the writes whose rules differ from the model's own.

    ``<Kind>Replace`` (PUT): ``metadata`` and ``metadata.name`` may be left out, the URL
    names the object. ``<Kind>MergePatch`` (PATCH, RFC 7396): only ``metadata`` (labels,
    annotations, the name and the resourceVersion precondition) and ``spec``; ``null``
    removes a key, except where the result would lack a required field.
    """
    meta = schemas["ObjectMeta"]
    replace_meta = copy.deepcopy(meta)
    replace_meta["title"] = "ObjectMetaReplace"
    replace_meta["required"] = [r for r in meta.get("required", []) if r != "name"]
    schemas["ObjectMetaReplace"] = replace_meta

    props = meta["properties"]

    def nullable_map(schema: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(schema)
        values = out.get("additionalProperties")
        if isinstance(values, dict):
            out["additionalProperties"] = _nullable(values)
        out.pop("default", None)
        return _nullable(out)

    schemas["ObjectMetaPatch"] = {
        "title": "ObjectMetaPatch",
        "type": "object",
        "properties": {
            "name": _nullable(copy.deepcopy(props["name"])),
            "labels": nullable_map(props["labels"]),
            "annotations": nullable_map(props["annotations"]),
            "resourceVersion": {"type": ["string", "integer", "null"]},
        },
        "additionalProperties": False,
    }
    for kind in ("Project", "Node", "Lease"):
        if kind not in schemas:
            continue
        base = schemas[kind]
        replace = copy.deepcopy(base)
        replace["title"] = f"{kind}Replace"
        replace["required"] = [r for r in base.get("required", []) if r != "metadata"]
        # Left out or null alike: the name comes from the URL.
        replace["properties"]["metadata"] = _nullable(_ref("ObjectMetaReplace"))
        schemas[f"{kind}Replace"] = replace
        spec_ref = base["properties"].get("spec", {}).get("$ref", "")
        spec_name = spec_ref.rpartition("/")[2]
        if kind == "Lease" or spec_name not in schemas:
            continue
        spec = schemas[spec_name]
        required = set(spec.get("required", []))
        patch_spec = copy.deepcopy(spec)
        patch_spec["title"] = f"{spec_name}Patch"
        patch_spec.pop("required", None)
        for prop_name, prop in patch_spec["properties"].items():
            prop.pop("default", None)
            if prop_name not in required:
                patch_spec["properties"][prop_name] = _nullable(prop)
        schemas[f"{spec_name}Patch"] = patch_spec
        spec_schema = _ref(f"{spec_name}Patch")
        schemas[f"{kind}MergePatch"] = {
            "title": f"{kind}MergePatch",
            "type": "object",
            "properties": {
                "apiVersion": {"anyOf": [{"const": API_VERSION}, {"type": "null"}]},
                "kind": {"anyOf": [{"const": kind}, {"type": "null"}]},
                "metadata": _nullable(_ref("ObjectMetaPatch")),
                "spec": spec_schema if "spec" in base.get("required", []) else _nullable(
                    spec_schema
                ),
            },
            "additionalProperties": False,
        }


def build_openapi(routes: list[RouteSpec], *, server_url: str | None = None) -> dict[str, Any]:
    """The whole document for the given route table."""
    models = _models_of(routes)
    mapping, top = models_json_schema(
        [(m, "validation") for m in models], ref_template=REF, by_alias=True
    )
    refs = {model: mapping[(model, "validation")] for model in models}
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    # The same constraints, closed objects and required fields as the published JSON
    # Schemas (schemas/*.json): the document must refuse what validation refuses.
    for name, schema in schemas.items():
        constrain(name, schema)
    _add_derived(schemas)

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        responses: dict[str, Any] = {}
        for reply in route.replies:
            entry: dict[str, Any] = {"description": reply.description}
            if reply.content:
                entry["content"] = {
                    media: {"schema": _schema_ref(schema, refs)} if schema is not None else {}
                    for media, schema in reply.content.items()
                }
            responses[str(reply.status)] = entry
        for status in sorted({*route.problems, *_ALWAYS}):
            responses[str(status)] = {
                "description": _PROBLEM_TITLES.get(status, "Problem"),
                "content": {PROBLEM_CONTENT_TYPE: {"schema": refs[Problem]}},
            }
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": [route.tag],
            "responses": responses,
        }
        if route.description:
            operation["description"] = route.description
        if route.params:
            operation["parameters"] = [_parameter(p) for p in route.params]
        if route.body is not None:
            ref = _schema_ref(route.body, refs)
            replace = f"{getattr(route.body, '__name__', '')}Replace"
            if route.method == "PUT" and replace in schemas:
                ref = _ref(replace)
            operation["requestBody"] = {
                "required": route.body_required,
                "content": {
                    "application/json": {"schema": ref},
                    "application/yaml": {"schema": ref},
                },
            }
        operation.update(route.extra)
        paths.setdefault(route.path, {})[route.method.lower()] = operation

    _add_links(paths)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Caravanserai API",
            "version": caravanserai.__version__,
            "description": (
                "The control-plane REST API of Caravanserai: projects and nodes with "
                "list/watch, a status subresource and RFC 9457 problem details."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
