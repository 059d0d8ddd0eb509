"""``PATCH /api/v1/{plural}/{name}`` with a JSON merge patch (RFC 7396).

``Content-Type: application/merge-patch+json``. The patch may touch ``metadata.labels``,
``metadata.annotations`` and ``spec``; ``metadata.resourceVersion``, when given, is a
precondition (409 if stale). ``null`` deletes a key. The merged object is validated exactly
as a PUT body and written by the registry's update, as a PUT (so the deletion and redeploy
rules hold), atomically against the version it was applied to; status is never touched (use
the status subresource).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from caravanserai.api.base import API_VERSION
from caravanserai.api.problems import BadRequest, Conflict, UnsupportedMediaType
from caravanserai.api.validation import parse_resource
from caravanserai.server.bodies import read_document
from caravanserai.server.routes_resources import ResourceHandlers, _registry, _wire
from caravanserai.server.state import CONFIG

__all__ = ["MERGE_PATCH", "merge_patch", "patch_handler"]

MERGE_PATCH = "application/merge-patch+json"
_RETRIES = 5
_PATCHABLE_METADATA = frozenset({"name", "labels", "annotations", "resourceVersion"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 §2 MergePatch (pure; returns a new value, ``target`` is not changed).

    Written out rather than imported: the RFC gives the whole algorithm in ten lines and
    the one PyPI package for it (``json-merge-patch``) implements the obsolete RFC 7386.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _check_patch(data: Any, kind: str, name: str) -> tuple[dict[str, Any], str | None]:
    """The part of the patch that applies to spec and metadata, and the precondition."""
    if not isinstance(data, dict):
        raise BadRequest("a merge patch must be a JSON object")
    if "status" in data:
        raise BadRequest("status cannot be patched here: use the status subresource (/status)")
    unknown = sorted(set(data) - {"apiVersion", "kind", "metadata", "spec"})
    if unknown:
        raise BadRequest(f"cannot patch {', '.join(unknown)}: only metadata and spec")
    if data.get("kind") not in (None, kind):
        raise BadRequest(f"kind {data['kind']!r} does not match {kind}")
    if data.get("apiVersion") not in (None, API_VERSION):
        raise BadRequest(f"apiVersion {data['apiVersion']!r} is not {API_VERSION!r}")
    meta = data.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise BadRequest("metadata must be an object")
    meta = meta or {}
    bad = sorted(set(meta) - _PATCHABLE_METADATA)
    if bad:
        raise BadRequest(
            f"cannot patch metadata.{', metadata.'.join(bad)}: "
            "only labels, annotations and the resourceVersion precondition"
        )
    if meta.get("name") not in (None, name):
        raise BadRequest(f"metadata.name {meta['name']!r} does not match the URL ({name!r})")
    rv = meta.get("resourceVersion")
    if rv is not None and not isinstance(rv, str | int):
        raise BadRequest("metadata.resourceVersion must be a string")
    applied: dict[str, Any] = {}
    if "spec" in data:
        applied["spec"] = data["spec"]
    patch_meta = {k: meta[k] for k in ("labels", "annotations") if k in meta}
    if patch_meta:
        applied["metadata"] = patch_meta
    return applied, (str(rv) if rv is not None else None)


def patch_handler(handlers: ResourceHandlers) -> Any:
    """The PATCH handler of one kind."""
    kind = handlers.kind

    async def patch(request: web.Request) -> web.Response:
        if request.content_type.lower() != MERGE_PATCH:
            raise UnsupportedMediaType(
                f"unsupported content type {request.content_type!r}: send {MERGE_PATCH}"
            )
        name = request.match_info["name"]
        data = await read_document(request, max_bytes=request.app[CONFIG].max_body_bytes)
        applied, resource_version = _check_patch(data, kind.kind, name)
        registry = _registry(request, kind)
        for attempt in range(_RETRIES):
            current = await registry.get_stored(name)
            meta = current.get("metadata") or {}
            document = {
                "apiVersion": current.get("apiVersion", "caravanserai/v1"),
                "kind": kind.kind,
                "metadata": {
                    "name": name,
                    "labels": meta.get("labels") or {},
                    "annotations": meta.get("annotations") or {},
                },
                "spec": current.get("spec") or {},
            }
            # Validated as a PUT body would be (Invalid → 422, one error per field), then
            # written by the registry's update, so every rule of a PUT holds.
            model = parse_resource(merge_patch(document, applied), kind=kind.kind)
            # The caller's precondition, else the version this patch was applied to: the
            # write is atomic against what was read, and retried if someone wrote between.
            model.metadata.resource_version = resource_version or meta.get("resourceVersion")
            try:
                return _wire(await registry.update(model))
            except Conflict:
                if resource_version is not None or attempt == _RETRIES - 1:
                    raise
                again = await registry.get_stored(name)
                if (again.get("metadata") or {}).get("resourceVersion") == meta.get(
                    "resourceVersion"
                ):
                    raise  # refused as it is (e.g. being deleted), not raced
        raise AssertionError("unreachable")

    return patch
