"""JSON Schemas (Draft 2020-12) of the resource kinds, generated from the pydantic models.

Editors and CI use them to check manifests before they reach the server; the server itself
validates with ``caravanserai.api.validation`` (which checks everything here and more: unique
names, references between fields, host-port clashes). The files in ``schemas/`` are generated
by ``hack/gen-schemas.py``, and a unit test fails when they are stale.

Shape (as the original's ``schemas/*.json``): ``$id`` ``project.json`` / ``node.json``, a
top-level ``$ref`` to ``#/$defs/Project`` / ``#/$defs/Node``, every object closed with
``additionalProperties: false``, models titled by class name and described by their docstring
(or by the seed documentation's wording where the model has none). The patterns and bounds
that JSON Schema can express (names, image references, env names, ports, absolute mount paths,
at least one service) are the ones ``validation`` enforces, from the same constants.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel

from caravanserai.api import service_rules as rules
from caravanserai.api import validation as v
from caravanserai.api.event import Event
from caravanserai.api.node import Node
from caravanserai.api.project import Project
from caravanserai.api.quantities import CPUS_PATTERN, DURATION_PATTERN, MEMORY_PATTERN

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Descriptions of models without a docstring and of fields, worded after the seed documents.
_MODEL_DESCRIPTIONS: dict[str, str] = {
    "Project": (
        "A Compose-like group of services that run together on one node, sharing a Docker "
        "bridge network."
    ),
    "Node": "A machine running cara-agent, on which projects are scheduled.",
    "ProjectSpec": "The desired state of a project.",
    "ProjectStatus": "What the system observed of a project (written by the server and agents).",
    "EnvVar": "An environment variable injected at container start.",
    "VolumeMount": "A volume of spec.volumes mounted into the container.",
    "VolumeDef": "A named volume that services of the project can mount.",
    "IngressDef": "An HTTP routing rule that maps a hostname to a service.",
    "IngressTarget": "The service and port traffic is routed to.",
    "IngressAccess": "Who can reach the route.",
    "NodeSpec": "The desired state of a node.",
    "NodeStatus": "What the node's agent reported.",
    "NodeNetwork": "How the node is reached.",
    "NodeInfo": "Facts about the node's machine and software.",
    "Throughput": "The last measured network throughput of the node.",
}

_FIELD_DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("Project", "apiVersion"): 'Must be "caravanserai/v1".',
    ("Project", "kind"): 'Must be "Project".',
    ("Node", "apiVersion"): 'Must be "caravanserai/v1".',
    ("Node", "kind"): 'Must be "Node".',
    ("ObjectMeta", "name"): (
        "Unique name of the object. Must be a DNS label: lowercase alphanumerics and hyphens, "
        "at most 63 characters, no leading or trailing hyphen."
    ),
    ("ObjectMeta", "labels"): "Arbitrary key/value string pairs for selection and grouping.",
    ("ObjectMeta", "annotations"): "Non-identifying key/value metadata.",
    ("ObjectMeta", "uid"): "Set by the server.",
    ("ObjectMeta", "resourceVersion"): (
        "Set by the server; an update carrying a stale value is rejected (409)."
    ),
    ("ObjectMeta", "generation"): "Set by the server; increases with every spec change.",
    ("ObjectMeta", "creationTimestamp"): "Set by the server.",
    ("ObjectMeta", "deletionTimestamp"): "Set by the server when deletion was requested.",
    ("ProjectSpec", "services"): (
        "Ordered list of containers to run. At least one service is required."
    ),
    ("ProjectSpec", "volumes"): (
        "Named volumes shared across services. Reference a volume from a service by setting "
        "volumeMounts[].name to the same value."
    ),
    ("ProjectSpec", "ingress"): "HTTP ingress routing rules.",
    ("ProjectSpec", "expireAt"): (
        "RFC 3339 timestamp. When set, the GC controller deletes the project after this time."
    ),
    ("ServiceDef", "name"): (
        "Service name, unique within the project. Used as the DNS hostname inside the shared "
        "Docker bridge network."
    ),
    ("ServiceDef", "image"): 'Docker image reference, e.g. "nginx:alpine" or "postgres:15".',
    ("ServiceDef", "env"): "Environment variables injected into the container at runtime.",
    ("ServiceDef", "volumeMounts"): "Volumes to mount into this container.",
    ("ServiceDef", "command"): "Overrides the image's CMD (as Compose's command).",
    ("ServiceDef", "entrypoint"): "Overrides the image's ENTRYPOINT (as Compose's entrypoint).",
    ("ServiceDef", "ports"): "Container ports, optionally published on the node.",
    ("EnvVar", "name"): (
        "Variable name: letters, digits, '_', '-' and '.', not starting with a digit."
    ),
    ("VolumeMount", "name"): "Name of a volume defined in spec.volumes.",
    ("VolumeMount", "mountPath"): "Absolute path inside the container where the volume is mounted.",
    ("PortMapping", "containerPort"): "Port inside the container.",
    ("PortMapping", "hostPort"): "Port published on the node; unique per protocol in the project.",
    ("VolumeDef", "name"): "Unique volume name within the project.",
    ("VolumeDef", "type"): (
        "Volume lifecycle type. Currently only Ephemeral is supported: the volume is discarded "
        "when the project is stopped or moved to another node."
    ),
    ("IngressDef", "name"): "Unique name for this ingress rule within the project.",
    ("IngressDef", "host"): (
        "Hostname for the rule. If the value contains a dot it is used verbatim; otherwise the "
        "hostname is assembled as {host}.{environment}.{baseDomain}."
    ),
    ("IngressTarget", "service"): "Name of the service to route traffic to.",
    ("IngressTarget", "port"): "Port on the target service.",
    ("IngressAccess", "scope"): (
        "Currently only Internal is supported: the route is visible only on the overlay network."
    ),
    ("ProjectStatus", "phase"): "Lifecycle phase.",
    ("ProjectStatus", "nodeRef"): "Name of the node the project is scheduled on.",
    ("NodeSpec", "hostname"): "The machine's hostname.",
    ("NodeSpec", "unschedulable"): "When true, the scheduler places no new projects on the node.",
    ("NodeStatus", "state"): "Ready, NotReady or Draining.",
    ("NodeStatus", "lastHeartbeat"): "When the agent last posted a heartbeat.",
}

_PORT = {"minimum": v.PORT_MIN, "maximum": v.PORT_MAX}
_DNS_LABEL = {"minLength": 1, "maxLength": v.DNS_LABEL_MAX, "pattern": f"^{v.DNS_LABEL_PATTERN}$"}
_ARG = {"type": "string", "maxLength": v.MAX_ARG_LENGTH, "pattern": f"^{v.NO_NUL_PATTERN}$"}
_DURATION = {
    "pattern": f"^{DURATION_PATTERN}$",
    "description": 'A duration such as "10s", "1m30s" or "500ms", at most 24h.',
}

# Constraints added to a property (to its non-null branch when it is nullable).
_CONSTRAINTS: dict[tuple[str, str], dict[str, Any]] = {
    ("ObjectMeta", "name"): _DNS_LABEL,
    ("ObjectMeta", "labels"): {
        "maxProperties": v.MAX_LABELS,
        "propertyNames": {"pattern": f"^{v.LABEL_KEY_PATTERN}$"},
        "additionalProperties": {
            "type": "string",
            "maxLength": v.LABEL_VALUE_MAX,
            "pattern": f"^{v.LABEL_VALUE_PATTERN}$",
        },
    },
    ("ObjectMeta", "annotations"): {"propertyNames": {"pattern": f"^{v.LABEL_KEY_PATTERN}$"}},
    ("ProjectSpec", "services"): {"minItems": 1, "maxItems": v.MAX_SERVICES},
    # An Event's metadata is ObjectMeta with a longer name (its own pydantic Field).
    ("ProjectSpec", "volumes"): {"maxItems": v.MAX_VOLUMES},
    ("ProjectSpec", "ingress"): {"maxItems": v.MAX_INGRESS},
    ("ServiceDef", "env"): {"maxItems": v.MAX_ENV},
    ("ServiceDef", "ports"): {"maxItems": v.MAX_PORTS},
    ("ServiceDef", "volumeMounts"): {"maxItems": v.MAX_VOLUME_MOUNTS},
    ("ServiceDef", "command"): {"maxItems": v.MAX_ARGS, "items": _ARG},
    ("ServiceDef", "entrypoint"): {"maxItems": v.MAX_ARGS, "items": _ARG},
    ("EnvVar", "value"): _ARG,
    ("ServiceDef", "name"): _DNS_LABEL,
    ("ServiceDef", "image"): {"minLength": 1, "pattern": f"^{v.IMAGE_REFERENCE_PATTERN}$"},
    ("EnvVar", "name"): {"minLength": 1, "pattern": f"^{v.ENV_NAME_PATTERN}$"},
    ("VolumeMount", "name"): {"minLength": 1},
    ("VolumeMount", "mountPath"): {
        "maxLength": v.MAX_PATH_LENGTH,
        # Absolute, and not the root however spelt ("/", "//", "/./").
        "pattern": r"^/[^\u0000]*[^/.\u0000][^\u0000]*$",
    },
    ("PortMapping", "containerPort"): _PORT,
    ("PortMapping", "hostPort"): _PORT,
    ("VolumeDef", "name"): _DNS_LABEL,
    ("IngressDef", "name"): _DNS_LABEL,
    ("IngressDef", "host"): {
        "minLength": 1,
        "maxLength": v.HOSTNAME_MAX,
        "pattern": f"^{v.HOSTNAME_PATTERN}$",
    },
    ("IngressTarget", "service"): {"minLength": 1},
    ("IngressTarget", "port"): _PORT,
    ("NodeSpec", "hostname"): {
        "minLength": 1,
        "maxLength": v.HOSTNAME_MAX,
        "pattern": f"^{v.HOSTNAME_PATTERN.replace('a-z', 'a-zA-Z')}$",
    },
    ("NodeNetwork", "agentPort"): _PORT,
    ("NodeNetwork", "proxyPort"): _PORT,
    # A bare IP address (``parse_node_ip``); the description names the kinds refused too.
    ("NodeNetwork", "ip"): {
        "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
        "description": (
            "The agent's IPv4 or IPv6 address; not unspecified, multicast or link-local."
        ),
    },
    ("HealthCheck", "test"): {
        "minItems": 1,
        # ["NONE"] disables the image's check; CMD and CMD-SHELL need a command after them.
        "anyOf": [
            {"prefixItems": [{"const": "NONE"}]},
            {"prefixItems": [{"enum": ["CMD", "CMD-SHELL"]}], "minItems": 2},
        ],
    },
    ("HealthCheck", "interval"): _DURATION,
    ("HealthCheck", "timeout"): _DURATION,
    ("HealthCheck", "startPeriod"): _DURATION,
    ("HealthCheck", "retries"): {"minimum": 0, "maximum": rules.MAX_PIDS},
    ("ResourceLimits", "pids"): {"minimum": 1, "maximum": rules.MAX_PIDS},
    ("Condition", "type"): {"minLength": 1},
}

# Constraints per JSON type of a union property (``float | str``: a number or a quantity).
# The bounds of a quantity written as a string (at most 4096 CPUs, 1Pi of memory, a memory
# limit of at least 6Mi, durations between 1ms and 24h) cannot be said in a pattern; the
# descriptions state them and validation reports them (422).
_QUANTITY_CPUS = {"type": "string", "pattern": f"^{CPUS_PATTERN}$"}
_QUANTITY_MEMORY = {"type": "string", "pattern": f"^{MEMORY_PATTERN}$"}
_BY_TYPE: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("ResourceLimits", "cpus"): {
        "number": {"exclusiveMinimum": 0, "maximum": rules.MAX_CPUS},
        "string": _QUANTITY_CPUS,
    },
    ("ResourceRequests", "cpus"): {
        "number": {"minimum": 0, "maximum": rules.MAX_CPUS},
        "string": _QUANTITY_CPUS,
    },
    ("ResourceLimits", "memory"): {
        "integer": {"minimum": rules.MIN_MEMORY_LIMIT, "maximum": rules.MAX_MEMORY},
        "string": _QUANTITY_MEMORY,
    },
    ("ResourceRequests", "memory"): {
        "integer": {"minimum": 0, "maximum": rules.MAX_MEMORY},
        "string": _QUANTITY_MEMORY,
    },
}

# Rules between the fields of one object, as JSON Schema applicators on the object.
_MODEL_CONSTRAINTS: dict[str, dict[str, Any]] = {
    # PATCH /projects/{name}/status: nodeRef only with phase Scheduled (422 otherwise).
    "PhasePatch": {
        "anyOf": [
            {"properties": {"phase": {"const": "Scheduled"}}},
            {"properties": {"nodeRef": {"type": "null"}}},
        ],
    },
}

# Fields a manifest must state although the model has a default for them.
_REQUIRED: dict[str, list[str]] = {
    "Project": ["apiVersion", "kind", "metadata", "spec"],
    "Node": ["apiVersion", "kind", "metadata"],
    "ProjectSpec": ["services"],
}


def schema_for(model: type[BaseModel], file_name: str) -> dict[str, Any]:
    """The published JSON Schema of one resource kind."""
    generated = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = generated.pop("$defs", {})
    defs[model.__name__] = generated
    for name, schema in defs.items():
        _post_process(name, schema)
    return {
        "$schema": DIALECT,
        "$id": file_name,
        "$ref": f"#/$defs/{model.__name__}",
        "$defs": dict(sorted(defs.items())),
    }


def project_schema() -> dict[str, Any]:
    return schema_for(Project, "project.json")


def node_schema() -> dict[str, Any]:
    return schema_for(Node, "node.json")


def event_schema() -> dict[str, Any]:
    """The Event kind's schema (what ``/api/v1/events`` serves and accepts)."""
    return schema_for(Event, "event.json")


def generate() -> dict[str, str]:
    """``{file name: file text}`` of every schema in ``schemas/``."""
    return {
        "project.json": render(project_schema()),
        "node.json": render(node_schema()),
        "event.json": render(event_schema()),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def constrain(name: str, schema: dict[str, Any]) -> None:
    """Add to model ``name``'s generated schema what validation enforces beyond types
    (patterns, lengths, item counts, required fields, closed objects); used for the
    published JSON Schemas and the OpenAPI document alike."""
    _post_process(name, schema)


for _field in ("labels", "annotations"):
    _CONSTRAINTS[("EventMeta", _field)] = _CONSTRAINTS[("ObjectMeta", _field)]


def _post_process(name: str, schema: dict[str, Any]) -> None:
    schema["title"] = name
    if name in _MODEL_DESCRIPTIONS and "description" not in schema:
        schema["description"] = _MODEL_DESCRIPTIONS[name]
    properties: dict[str, Any] = schema.get("properties", {})
    if schema.get("type") == "object" and properties:
        schema["additionalProperties"] = False
    for prop_name, prop in properties.items():
        prop.pop("title", None)  # pydantic's "Mountpath"-style titles say nothing
        if (name, prop_name) in _FIELD_DESCRIPTIONS:
            prop["description"] = _FIELD_DESCRIPTIONS[(name, prop_name)]
        if (name, prop_name) in _CONSTRAINTS:
            _non_null(prop).update(copy.deepcopy(_CONSTRAINTS[(name, prop_name)]))
        for json_type, extra in _BY_TYPE.get((name, prop_name), {}).items():
            for branch in prop.get("anyOf", [prop]):
                if branch.get("type") == json_type:
                    branch.update(copy.deepcopy(extra))
    schema.update(copy.deepcopy(_MODEL_CONSTRAINTS.get(name, {})))
    _no_nul(schema)
    required = set(schema.get("required", [])) | set(_REQUIRED.get(name, []))
    if required:
        schema["required"] = [p for p in properties if p in required]  # in property order
    # Keys in a fixed, readable order.
    order = ["title", "description", "type", "properties", "required", "additionalProperties"]
    items = sorted(schema.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    schema.clear()
    schema.update(items)


def _no_nul(node: Any) -> None:
    """Every free-text string refuses NUL (PostgreSQL cannot store it: the server says 422)."""
    if isinstance(node, dict):
        if (
            node.get("type") == "string"
            and not {"pattern", "enum", "const", "format"} & node.keys()
        ):
            node["pattern"] = f"^{v.NO_NUL_PATTERN}$"
        if (
            node.get("type") == "object"
            and isinstance(node.get("additionalProperties"), dict)
            and "propertyNames" not in node
        ):
            node["propertyNames"] = {"pattern": f"^{v.NO_NUL_PATTERN}$"}  # map keys too
        for key, child in node.items():
            if key != "properties":
                _no_nul(child)
            else:
                for prop in child.values():
                    _no_nul(prop)
    elif isinstance(node, list):
        for child in node:
            _no_nul(child)


def _non_null(prop: dict[str, Any]) -> dict[str, Any]:
    """The branch of ``X | None`` that is not null (or the property itself)."""
    for branch in prop.get("anyOf", []):
        if branch.get("type") != "null":
            return branch
    return prop
