"""``caractrl explain project.spec.services``: a field's type, description and sub-fields,
from the kinds' JSON Schemas (the ones in ``schemas/``, generated from the API models by
:mod:`caravanserai.api.jsonschema`), in kubectl explain's layout."""

from __future__ import annotations

import textwrap
from typing import Any

from caravanserai.api import API_VERSION


class ExplainError(ValueError):
    pass


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` and drop the ``null`` of optional fields (``anyOf [X, null]``)."""
    while True:
        if "$ref" in node:
            ref = node["$ref"].rsplit("/", 1)[-1]
            extra = {k: v for k, v in node.items() if k != "$ref"}
            node = {**schema["$defs"][ref], **extra}
            continue
        options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            extra = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**options[0], **extra}
            continue
        return node


def type_name(schema: dict[str, Any], node: dict[str, Any]) -> str:
    """``string``, ``integer``, ``[]ServiceDef``, ``map[string]string``, ``ProjectSpec``."""
    raw = node
    if "$ref" in raw:
        target = schema["$defs"][raw["$ref"].rsplit("/", 1)[-1]]
        return "string" if "enum" in target else raw["$ref"].rsplit("/", 1)[-1]
    node = _resolve(schema, node)
    if node is not raw and "$ref" not in raw and node.get("title") and node.get("type") == "object":
        return str(node["title"])
    kind = node.get("type")
    if kind == "array":
        return "[]" + type_name(schema, node.get("items", {}))
    if kind == "object" and "additionalProperties" in node and not node.get("properties"):
        extra = node["additionalProperties"]
        inner = type_name(schema, extra) if isinstance(extra, dict) else "Object"
        return f"map[string]{inner}"
    if kind == "object":
        return str(node.get("title") or "Object")
    if "enum" in node:
        return "string"
    return str(kind or "Object")


def _element(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """An array's items (to walk into ``spec.services.name``), else the node itself."""
    node = _resolve(schema, node)
    if node.get("type") == "array":
        return _resolve(schema, node.get("items", {}))
    return node


def explain(schema: dict[str, Any], kind: str, path: list[str]) -> str:
    root = _resolve(schema, {"$ref": schema["$ref"]})
    node: dict[str, Any] = root
    field_type = kind
    for i, part in enumerate(path):
        props = _element(schema, node).get("properties") or {}
        if part not in props:
            where = ".".join([kind.lower(), *path[:i]])
            known = ", ".join(sorted(props)) or "none"
            raise ExplainError(f'field "{part}" does not exist in {where} (fields: {known})')
        raw = props[part]
        field_type = type_name(schema, raw)
        node = _resolve(schema, raw)
    lines = [f"KIND:       {kind}", f"VERSION:    {API_VERSION}", ""]
    if path:
        lines += [f"FIELD: {path[-1]} <{field_type}>", ""]
    lines.append("DESCRIPTION:")
    lines += _wrap(str(node.get("description") or "<empty>"), 4)
    if "enum" in node:
        lines += ["", "ENUM:"] + [f"    {v}" for v in node["enum"]]
    fields = _element(schema, node)
    props = fields.get("properties") or {}
    if props:
        required = set(fields.get("required") or [])
        lines += ["", "FIELDS:"]
        for name, prop in props.items():
            flag = " -required-" if name in required else ""
            lines.append(f"  {name}\t<{type_name(schema, prop)}>{flag}")
            desc = _resolve(schema, prop).get("description") if "$ref" not in prop else (
                prop.get("description")
            )
            lines += _wrap(str(desc or "<empty>"), 4)
            lines.append("")
        while lines and lines[-1] == "":
            lines.pop()
    return "\n".join(lines)


def _wrap(text: str, indent: int) -> list[str]:
    return textwrap.wrap(text, width=80, initial_indent=" " * indent,
                         subsequent_indent=" " * indent) or [" " * indent]
