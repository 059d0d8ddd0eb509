"""schemathesis hooks of the ``--checks all`` run (tests/integration/test_openapi_schemathesis.py).

The CLI loads this module through ``SCHEMATHESIS_HOOKS``. It does not hide failures: no check
is skipped and no response is ignored. It only does two things to generated requests:

1. Keeps the fuzzer's traffic on this machine (every mode): a node address the server would
   accept is dropped from bodies, so no generated IP is ever stored and then connected to by
   the log/exec/port-forward relay (tests contact nothing but 127.0.0.1, and no agent runs).

2. Gives schema-valid ("positive") cases the relations between fields that OpenAPI 3.1 and
   JSON Schema cannot state. The server checks each of them and documents it in the field's
   description; a schema cannot say "equal to another field" or "one of the names declared
   elsewhere in the document". Negative cases are left alone: whatever they break must be
   refused. The relations:

   - the object named in the URL is the one in the body (``metadata.name``);
   - references inside a project name something declared in it (``volumeMounts[].name``,
     ``dependsOn[].service``, ``ingress[].target.service``), names are unique where they
     key a list (services, volumes, ingress rules and hosts, env vars, mount paths, host
     ports), dependencies form no cycle, and ``service_healthy`` waits for a service that
     has a healthcheck;
   - bounds inside a string (durations between 1ms and 24h, quantities, a limit at least
     its request, the 255-character name part of an image reference before its tag);
   - an ``expireAt`` in the past deletes the project at once (the stateful phase would find
     it gone): positive cases expire tomorrow;
   - ``continue`` is a token minted by the server for the previous page, never made up;
   - a merge patch's lists replace the stored ones wholesale, so a patch of the spec states
     all three lists (references between them cannot point into the stored object).
"""

from __future__ import annotations

import contextlib
import io
import posixpath
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from ruamel.yaml import YAML
from schemathesis import GenerationMode

from caravanserai.api.node import parse_node_ip
from caravanserai.api.quantities import parse_cpus, parse_duration, parse_memory
from caravanserai.api.service_rules import (
    MAX_CPUS,
    MAX_HEALTH_DURATION,
    MAX_MEMORY,
    MIN_MEMORY_LIMIT,
)
from caravanserai.api.validation import is_dns_label, is_image_reference


# Every YAML media type: schemathesis picks the first registered one of the YAML family.
@schemathesis.serializer(
    "text/yaml", "text/x-yaml", "text/vnd.yaml", "text/yml", "application/yaml",
    "application/x-yaml",
)
def yaml_1_2(context: Any, value: Any) -> bytes:
    """YAML bodies as YAML 1.2, the server's dialect (ruamel.yaml). schemathesis' own
    serializer writes YAML 1.1 without a ``%YAML`` directive, where a plain ``09`` or ``1e5``
    is a string; in 1.2 it is a number, so a name such as "09" would arrive as 9."""
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(value, out)
    return out.getvalue().encode()


@schemathesis.hook
def before_call(context: Any, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    # before_call runs in every phase (coverage, fuzzing, stateful) right before sending;
    # schemathesis re-validates an edited case, so its positive/negative label stays true.
    meta = case.meta
    positive = meta is None or meta.generation.mode is GenerationMode.POSITIVE
    body = case.body
    if isinstance(body, dict):
        _drop_addresses(body, positive)
    if not positive:
        return
    if isinstance(case.query, dict):
        case.query.pop("continue", None)
    if not isinstance(body, dict):
        return
    name = (case.path_parameters or {}).get("name")
    metadata = body.get("metadata")
    writes_named = case.method.upper() in ("PUT", "PATCH")
    if writes_named and isinstance(name, str) and is_dns_label(name) and isinstance(metadata, dict):
        metadata["name"] = name
    spec = body.get("spec")
    if "/projects" in case.path and isinstance(spec, dict):
        if case.method.upper() == "PATCH":
            spec.setdefault("services", [{"name": "web", "image": "nginx:alpine"}])
            for key in ("volumes", "ingress"):
                if spec.get(key) is None:
                    spec[key] = []
        _repair_project_spec(spec)


# -- 1. nothing generated is ever connected to -----------------------------------------------


def _drop_addresses(body: dict[str, Any], positive: bool) -> None:
    """Drop a node address the server would store. In a positive case, drop any: the
    schema says IPv4 or IPv6, the server also refuses unspecified, multicast and
    link-local ones (``::``, ``224.0.0.1``), which no pattern here can single out."""
    status = body.get("status")
    for network in (
        body.get("network"),  # heartbeat
        status.get("network") if isinstance(status, dict) else None,  # Node
    ):
        if isinstance(network, dict) and isinstance(network.get("ip"), str):
            try:
                parse_node_ip(network["ip"])
            except ValueError:
                if not positive:
                    continue  # refused anyway (and it may be what the case is about)
            del network["ip"]


# -- 2. relations between fields of a project ------------------------------------------------


def _named(items: Any) -> list[dict[str, Any]]:
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _unique(items: list[dict[str, Any]], key: Any) -> list[dict[str, Any]]:
    seen: set[Any] = set()
    out = []
    for item in items:
        k = key(item)
        if k is not None and k in seen:
            continue
        seen.add(k)
        out.append(item)
    return out


def _repair_project_spec(spec: dict[str, Any]) -> None:
    if isinstance(spec.get("expireAt"), str):
        # A passed expireAt has the GC controller delete the project at once, and a
        # stateful step would then find its object gone: keep it in the future.
        spec["expireAt"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    if isinstance(spec.get("volumes"), list):
        spec["volumes"] = _unique(_named(spec["volumes"]), lambda v: v.get("name"))
    volumes = {v.get("name") for v in _named(spec.get("volumes"))}
    services = _named(spec.get("services"))
    names: set[str] = set()
    for i, service in enumerate(services):
        if service.get("name") in names:
            service["name"] = next(f"s{i}-{n}" for n in range(1000) if f"s{i}-{n}" not in names)
        names.add(service["name"])
    host_ports: set[tuple[Any, Any]] = set()
    for service in services:
        _repair_service(service, volumes, host_ports)
    _repair_dependencies(services)
    if isinstance(spec.get("ingress"), list):
        rules = _unique(_named(spec["ingress"]), lambda r: r.get("name"))
        rules = _unique(rules, lambda r: r.get("host"))
        for rule in rules:
            target = rule.get("target")
            if isinstance(target, dict) and target.get("service") not in names and services:
                target["service"] = services[0]["name"]
        spec["ingress"] = rules


def _repair_service(
    service: dict[str, Any], volumes: set[Any], host_ports: set[tuple[Any, Any]]
) -> None:
    if isinstance(service.get("image"), str) and not is_image_reference(service["image"]):
        service["image"] = "nginx:alpine"  # the name part was longer than 255 characters
    if isinstance(service.get("env"), list):
        service["env"] = _unique(_named(service["env"]), lambda e: e.get("name"))
    if isinstance(service.get("volumeMounts"), list):
        mounts = [m for m in _named(service["volumeMounts"]) if m.get("name") in volumes]
        service["volumeMounts"] = _unique(mounts, lambda m: _normal_path(m.get("mountPath")))
    for port in _named(service.get("ports")):
        key = (port.get("hostPort"), port.get("protocol", "tcp"))
        if key[0] is not None and key in host_ports:
            del port["hostPort"]
        host_ports.add(key)
    health = service.get("healthcheck")
    if isinstance(health, dict):
        for key, default in (("interval", "10s"), ("timeout", "5s"), ("startPeriod", "0s")):
            if isinstance(health.get(key), str):
                try:
                    seconds = parse_duration(health[key])
                except ValueError:
                    continue  # not a duration: for the server to refuse
                low = 0 if key == "startPeriod" else 0.001
                if not low <= seconds <= MAX_HEALTH_DURATION:
                    health[key] = default
    resources = service.get("resources")
    if isinstance(resources, dict):
        _repair_resources(resources)


def _repair_resources(resources: dict[str, Any]) -> None:
    limits, requests = resources.get("limits"), resources.get("requests")
    for part, block in (("limits", limits), ("requests", requests)):
        if not isinstance(block, dict):
            continue
        with contextlib.suppress(ValueError):  # not a quantity: for the server to refuse
            if isinstance(block.get("cpus"), str):
                cpus = parse_cpus(block["cpus"])
                if cpus > MAX_CPUS or (part == "limits" and cpus <= 0):
                    block["cpus"] = "1"
        with contextlib.suppress(ValueError):
            if isinstance(block.get("memory"), str):
                memory = parse_memory(block["memory"])
                if memory > MAX_MEMORY or (part == "limits" and memory < MIN_MEMORY_LIMIT):
                    block["memory"] = "64Mi"
    if isinstance(limits, dict) and isinstance(requests, dict):
        for key, parse in (("cpus", parse_cpus), ("memory", parse_memory)):
            both = limits.get(key) is not None and requests.get(key) is not None
            try:
                if both and parse(requests[key]) > parse(limits[key]):
                    requests[key] = limits[key]
            except ValueError:
                continue  # not a quantity: for the server to refuse


def _repair_dependencies(services: list[dict[str, Any]]) -> None:
    """Keep each service's dependencies on services declared before it (so no cycle)."""
    healthy = {
        s["name"]
        for s in services
        if isinstance(s.get("healthcheck"), Mapping) and s["healthcheck"].get("test") != ["NONE"]
    }
    earlier: set[str] = set()
    for service in services:
        deps = service.get("dependsOn")
        if isinstance(deps, list):
            kept = _unique(
                [d for d in _named(deps) if d.get("service") in earlier],
                lambda d: d.get("service"),
            )
            for dep in kept:
                if dep.get("condition") == "service_healthy" and dep["service"] not in healthy:
                    dep["condition"] = "service_started"
            service["dependsOn"] = kept
        earlier.add(service["name"])


def _normal_path(path: Any) -> Any:
    if not isinstance(path, str):
        return path
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal
