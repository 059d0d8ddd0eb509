"""Validation of manifests: every violation, each with its field path.

``parse_resource`` is the one entry point for untrusted input (HTTP bodies, YAML files). It
reports *all* problems at once, as ``FieldError``\\ s whose ``field`` is the path in the
manifest's own spelling (camelCase names, list indexes and map keys in brackets):

    spec.services[1].image: must not be empty
    spec.services[0].imagee: unknown field
    metadata.labels[app]: must be a string

Two passes, merged and sorted in document order:

1. **Types** (pydantic, strict JSON mode): ``"80"`` is not an integer, ``"yes"`` not a boolean,
   ``8080`` not a string, a naive timestamp is not a timestamp, an unknown field is an error.
   Strict mode keeps the API in step with the published JSON Schema (``schemas/``).
2. **Rules** the types cannot express (names, references, uniqueness, ranges). They run on the
   raw dict, so they are reported even when part of the object failed to parse; a value of the
   wrong type is left to pass 1.

Rules and their messages:

* ``apiVersion`` must be ``caravanserai/v1`` and ``kind`` the resource's kind; both must be
  stated (the models default them, the manifest may not omit them).
* ``metadata.name``: a DNS label (RFC 1123): lowercase alphanumerics and ``-``, at most 63
  characters, starting and ending with an alphanumeric.
* ``metadata.labels``: keys are Kubernetes qualified names (an optional DNS-subdomain prefix and
  ``/``, then at most 63 alphanumerics, ``-``, ``_`` or ``.``, alphanumeric at both ends); values
  are empty or follow the same rule as the name part. Annotation keys follow the key rule;
  annotations total at most 256 KiB.
* Server-managed fields (``uid``, ``resourceVersion``, ``generation``, ``creationTimestamp``,
  ``deletionTimestamp``, ``status``) are accepted (the server overwrites them) but type-checked.
* Project: at least one service; service, volume and ingress names are unique DNS labels; an
  image is a Docker reference (``[registry[:port]/]path[:tag][@digest]``); env names match
  ``[-._a-zA-Z][-._a-zA-Z0-9]*`` (the Kubernetes rule: POSIX names plus the ``.`` and ``-``
  Compose allows) and are unique per service; a volume mount names a declared volume at an
  absolute path other than ``/``, each path at most once per service (the same volume at two
  paths is fine); ports are 1-65535 and a host port is published once per protocol across the
  project; an ingress targets an existing service on a port 1-65535, its host is a DNS label
  or a lowercase dotted hostname (at most 253 characters) used by no other rule;
  ``expireAt`` is an RFC 3339 timestamp with an offset.
* Bounds (``LIST_LIMITS``, ``MAX_LABELS``, ``MAX_ARG_LENGTH``, ``MAX_PATH_LENGTH``): at most
  256 labels, 128 services, volumes and ingress rules, and per service 1024 env entries, 256
  ports, 128 mounts, 4096 command/entrypoint items; an env value or argument at most 131072
  characters, a mount path at most 4096.
* Text: no string or key anywhere may hold NUL or a lone surrogate (PostgreSQL stores
  neither); checked first, with the field path (``text_errors``).
* Node: ``spec.hostname``, when set, is a hostname (letters of either case: machine names often
  have capitals); ``status.network.agentPort`` / ``proxyPort`` are 1-65535.
"""

from __future__ import annotations

import json
import posixpath
import re
import types
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from caravanserai.api.base import API_VERSION, ObjectMeta
from caravanserai.api.node import Node
from caravanserai.api.problems import BadRequest, FieldError, Invalid
from caravanserai.api.project import Project
from caravanserai.api.resources import KINDS
from caravanserai.api.service_rules import check_dependencies, check_service_extras

# --------------------------------------------------------------------------------------------
# Patterns. Written in the common subset of Python ``re`` and ECMA-262 regular expressions, so
# the JSON Schema generator (``caravanserai.api.jsonschema``) publishes exactly these, anchored.

DNS_LABEL_MAX = 63
HOSTNAME_MAX = 253
LABEL_VALUE_MAX = 63
ANNOTATIONS_MAX_BYTES = 256 * 1024
IMAGE_NAME_MAX = 255  # distribution/reference NameTotalLengthMax (the part before tag/digest)
PORT_MIN, PORT_MAX = 1, 65535

# Counts and sizes. Kubernetes bounds label syntax and annotation bytes and leaves the rest
# to its 1.5 MiB object limit; we bound each list too, so a 25,000-service project is a 422
# naming the field, not a node's worth of containers. A normal project is far below each.
MAX_LABELS = 256
MAX_SERVICES = 128
MAX_VOLUMES = 128
MAX_INGRESS = 128
MAX_ENV = 1024
MAX_PORTS = 256
MAX_VOLUME_MOUNTS = 128
MAX_ARGS = 4096  # command / entrypoint items
# Characters, not bytes, so JSON Schema's maxLength states exactly the same bound.
MAX_ARG_LENGTH = 128 * 1024  # Linux MAX_ARG_STRLEN (bytes): one argv or environment string
MAX_PATH_LENGTH = 4096  # PATH_MAX
LIST_LIMITS: dict[str, int] = {
    "spec.services": MAX_SERVICES,
    "spec.volumes": MAX_VOLUMES,
    "spec.ingress": MAX_INGRESS,
    "env": MAX_ENV,
    "ports": MAX_PORTS,
    "volumeMounts": MAX_VOLUME_MOUNTS,
    "command": MAX_ARGS,
    "entrypoint": MAX_ARGS,
}

DNS_LABEL_PATTERN = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
"""RFC 1123 label: lowercase alphanumerics and '-', ≤63, alphanumeric at both ends."""

HOSTNAME_PATTERN = rf"{DNS_LABEL_PATTERN}(?:\.{DNS_LABEL_PATTERN})*"
"""Dot-separated DNS labels (the total length, ≤253, is checked separately)."""

_QUALIFIED_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = rf"(?:{HOSTNAME_PATTERN}/)?{_QUALIFIED_NAME}"
"""Kubernetes qualified name: optional DNS-subdomain prefix and '/', then the name part."""

LABEL_VALUE_PATTERN = rf"(?:{_QUALIFIED_NAME})?"

NO_NUL_PATTERN = r"[^\u0000]*"
"""Any text PostgreSQL can store (``text_problem`` also refuses lone surrogates, which JSON
Schema cannot tell apart)."""

ENV_NAME_PATTERN = r"[-._a-zA-Z][-._a-zA-Z0-9]*"
"""Environment variable names, as Kubernetes: POSIX names plus '.' and '-' (Compose allows them)."""

# The grammar of github.com/distribution/reference (what `docker pull` accepts), ASCII only.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE_PATTERN = rf"{_IMAGE_NAME}(?::{_TAG})?(?:@{_DIGEST})?"
"""A Docker image reference: ``[registry[:port]/]path[:tag][@digest]``."""

_DNS_LABEL_RE = re.compile(DNS_LABEL_PATTERN)
_HOSTNAME_RE = re.compile(HOSTNAME_PATTERN)
_LABEL_KEY_RE = re.compile(LABEL_KEY_PATTERN)
_LABEL_VALUE_RE = re.compile(LABEL_VALUE_PATTERN)
_ENV_NAME_RE = re.compile(ENV_NAME_PATTERN)
_IMAGE_RE = re.compile(rf"(?P<name>{_IMAGE_NAME})(?::{_TAG})?(?:@{_DIGEST})?")

# --------------------------------------------------------------------------------------------
# Messages (short, lowercase, kubectl-like).

MSG_REQUIRED = "required"
MSG_EMPTY = "must not be empty"
MSG_UNKNOWN_FIELD = "unknown field"
MSG_DNS_LABEL = (
    'must be a DNS label: lowercase alphanumerics and "-", at most 63 characters, '
    "starting and ending with an alphanumeric"
)
MSG_HOSTNAME = (
    'must be a DNS label or a hostname of dot-separated DNS labels (lowercase alphanumerics '
    'and "-"), at most 253 characters'
)
MSG_NODE_HOSTNAME = (
    'must be a hostname: dot-separated labels of alphanumerics and "-", each at most '
    "63 characters and starting and ending with an alphanumeric, at most 253 characters"
)
MSG_IMAGE = (
    'must be a Docker image reference, [registry[:port]/]path[:tag][@digest] with a lowercase '
    'path, e.g. "nginx:alpine"'
)
MSG_ENV_NAME = (
    'must be an environment variable name: letters, digits, "_", "-" and ".", '
    "not starting with a digit"
)
MSG_LABEL_KEY = (
    'invalid key: must be an optional DNS subdomain prefix and "/", then a name of at most '
    '63 alphanumerics, "-", "_" or ".", starting and ending with an alphanumeric'
)
MSG_LABEL_VALUE = (
    'invalid value: must be empty or at most 63 alphanumerics, "-", "_" or ".", '
    "starting and ending with an alphanumeric"
)
MSG_ANNOTATIONS_SIZE = f"must be at most {ANNOTATIONS_MAX_BYTES} bytes in total"
MSG_ABSOLUTE_PATH = "must be an absolute path"
MSG_ROOT_PATH = 'must not be "/"'
MSG_PORT = f"must be between {PORT_MIN} and {PORT_MAX}"
MSG_TIMESTAMP = "must be an RFC 3339 timestamp with a time zone offset"
MSG_NO_SERVICES = "must have at least one service"
MSG_NUL = "must not contain the NUL character (U+0000)"
MSG_SURROGATE = "must be valid Unicode (no lone surrogate code points)"


def msg_too_many(limit: int) -> str:
    return f"must have at most {limit} items"


def msg_too_long(limit: int) -> str:
    return f"must be at most {limit} characters"

_KINDS: dict[str, type[Project] | type[Node]] = {k: r.model for k, r in KINDS.items()}

# --------------------------------------------------------------------------------------------
# Public predicates.


def is_dns_label(value: object) -> bool:
    """An RFC 1123 DNS label: ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63 characters."""
    return isinstance(value, str) and _DNS_LABEL_RE.fullmatch(value) is not None


def is_hostname(value: object) -> bool:
    """A DNS label or dot-separated DNS labels (lowercase), at most 253 characters."""
    return (
        isinstance(value, str)
        and len(value) <= HOSTNAME_MAX
        and _HOSTNAME_RE.fullmatch(value) is not None
    )


def is_image_reference(value: object) -> bool:
    """A Docker image reference (``[registry[:port]/]path[:tag][@digest]``, lowercase path)."""
    if not isinstance(value, str) or len(value) > IMAGE_NAME_MAX + 1 + 128 + 1 + 1024:
        return False
    m = _IMAGE_RE.fullmatch(value)
    return m is not None and len(m["name"]) <= IMAGE_NAME_MAX


def is_env_name(value: object) -> bool:
    """``[-._a-zA-Z][-._a-zA-Z0-9]*`` (the Kubernetes rule for container env names)."""
    return isinstance(value, str) and _ENV_NAME_RE.fullmatch(value) is not None


def is_label_key(value: object) -> bool:
    """A Kubernetes label/annotation key: ``[prefix/]name``, prefix a DNS subdomain (≤253)."""
    if not isinstance(value, str) or _LABEL_KEY_RE.fullmatch(value) is None:
        return False
    prefix, _, _name = value.rpartition("/")
    return len(prefix) <= HOSTNAME_MAX


def is_label_value(value: object) -> bool:
    """Empty, or at most 63 alphanumerics, '-', '_', '.', alphanumeric at both ends."""
    return isinstance(value, str) and _LABEL_VALUE_RE.fullmatch(value) is not None


def validate_name(name: object, field: str = "metadata.name") -> list[FieldError]:
    """The errors of an object name (a DNS label); ``[]`` when it is valid.

    A name of the wrong type is reported as such, so callers can use this on any input
    (e.g. a name taken from a URL path).
    """
    if name is None:
        return [FieldError(field=field, message=MSG_REQUIRED)]
    if not isinstance(name, str):
        return [FieldError(field=field, message="must be a string")]
    if name == "":
        return [FieldError(field=field, message=MSG_EMPTY)]
    if not is_dns_label(name):
        return [FieldError(field=field, message=MSG_DNS_LABEL)]
    return []


def text_problem(value: str) -> str | None:
    """Why PostgreSQL would refuse ``value`` (NUL in text/jsonb, a lone surrogate in UTF-8),
    or None. One definition for bodies, path segments and query parameters."""
    if "\x00" in value:
        return MSG_NUL
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return MSG_SURROGATE
    return None


def text_errors(value: Any, path: str = "") -> list[FieldError]:
    """Every string (value or object key) in a JSON document that PostgreSQL cannot store,
    with its field path (``metadata.annotations[a]``, ``spec.services[0].env[1].value``)."""
    errors: list[FieldError] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if (problem := text_problem(item)) is not None:
                errors.append(FieldError(field=where or "(body)", message=problem))
        elif isinstance(item, Mapping):
            for key, child in item.items():
                key = str(key)
                key_problem = text_problem(key)
                shown = key if key_problem is None else ascii(key)[1:-1]
                child_path = (
                    f"{where}[{shown}]" if where.endswith(_MAP_FIELDS) or key_problem
                    else (f"{where}.{shown}" if where else shown)
                )
                if key_problem is not None:
                    errors.append(FieldError(field=child_path, message=key_problem))
                    continue
                stack.append((child_path, child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))
    errors.reverse()
    return errors


# Maps whose keys are data (shown in brackets, as the rule pass spells them), not fields.
_MAP_FIELDS = ("labels", "annotations")


# --------------------------------------------------------------------------------------------
# The public entry points.


def parse_resource(data: Any, *, kind: str | None = None) -> Project | Node:
    """Parse a manifest dict into a Project or Node, checking every rule.

    Raises ``Invalid`` (422) listing every violation with its field path, e.g.
    ``spec.services[1].image: must not be empty``; ``BadRequest`` when ``data`` is not an object.
    When ``kind`` is given the manifest must be of that kind.
    """
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if not isinstance(data, Mapping):
        raise BadRequest(f"the manifest must be a JSON object, not {_json_type(data)}")
    try:
        raw = _plain(data, 0)
    except _TooDeep:
        raise BadRequest(f"the manifest nests deeper than {_MAX_DEPTH} levels") from None
    if text := text_errors(raw):
        # Checked first: such strings cannot reach the store, and the other passes would
        # report them confusingly (or not at all).
        raise Invalid(_invalid_detail(kind, raw), _in_document_order(raw, _dedupe(text)))

    errors = _check_type_meta(raw, kind)
    raw_kind = raw.get("kind")
    effective = kind or (raw_kind if isinstance(raw_kind, str) and raw_kind in _KINDS else None)
    # apiVersion and kind are checked above (against the raw dict: the models default them).
    body = {k: v for k, v in raw.items() if k not in ("apiVersion", "kind")}
    model: Project | Node | None = None
    semantic: list[FieldError]
    if effective is not None:
        cls = _KINDS[effective]
        try:
            model = cls.model_validate_json(
                json.dumps(body), strict=True, by_alias=True, by_name=False
            )
        except ValidationError as e:
            errors += _type_errors(e, cls)
        semantic = _check_project(raw) if effective == "Project" else _check_node(raw)
    else:
        # Unknown kind: still say what is wrong with the metadata.
        if "metadata" not in raw:
            errors.append(FieldError(field="metadata", message=MSG_REQUIRED))
        else:
            try:
                ObjectMeta.model_validate_json(
                    json.dumps(raw["metadata"]), strict=True, by_alias=True, by_name=False
                )
            except ValidationError as e:
                errors += _type_errors(e, ObjectMeta, prefix=("metadata",))
        semantic = _check_metadata(raw.get("metadata"))

    # A field with a type error gets no rule error on top.
    typed = {e.field for e in errors}
    errors += [e for e in semantic if e.field not in typed]
    if errors or model is None:
        raise Invalid(_invalid_detail(effective, raw), _in_document_order(raw, _dedupe(errors)))
    return model


def validate_metadata(meta: ObjectMeta) -> list[FieldError]:
    """The rules of ``metadata`` (name, labels, annotations) every kind shares."""
    return _dedupe(_check_metadata(meta.model_dump(mode="json", by_alias=True)))


def validate_project(project: Project) -> list[FieldError]:
    """Semantic rules of a Project (the model already checked types)."""
    wire = project.to_wire()
    return _in_document_order(wire, _dedupe(_check_project(wire)))


def validate_node(node: Node) -> list[FieldError]:
    """Semantic rules of a Node."""
    wire = node.to_wire()
    return _in_document_order(wire, _dedupe(_check_node(wire)))


# --------------------------------------------------------------------------------------------
# Input normalisation.

_MAX_DEPTH = 64


class _TooDeep(Exception):
    pass


def _plain(value: Any, depth: int) -> Any:
    """The JSON data model of ``value`` (YAML loaders add dates and non-string keys)."""
    if depth > _MAX_DEPTH:
        raise _TooDeep
    if isinstance(value, Mapping):
        return {_key(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # JSON Schema: a number with a zero fractional part is an integer
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    if isinstance(value, datetime | date):
        # A naive datetime stays naive, so it is reported as lacking an offset.
        return value.isoformat()
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# Pass 1: type errors from pydantic, in manifest spelling.

_EXPECTED_RE = re.compile(r"'((?:[^'\\]|\\.)*)'")

_TYPE_MESSAGES = {
    "missing": MSG_REQUIRED,
    "extra_forbidden": MSG_UNKNOWN_FIELD,
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing_size": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "none_required": "must be null",
}


def _type_errors(
    exc: ValidationError, model: type[BaseModel], prefix: tuple[str | int, ...] = ()
) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False):
        field = _render_loc(model, tuple(err["loc"]), prefix)
        out.append(FieldError(field=field, message=_type_message(err["type"], err)))
    return out


def _type_message(kind: str, err: Any) -> str:
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    if kind in ("enum", "literal_error"):
        expected = _EXPECTED_RE.findall(str((err.get("ctx") or {}).get("expected", "")))
        quoted = [f'"{v}"' for v in expected]
        if len(quoted) == 1:
            return f"must be {quoted[0]}"
        return "must be one of " + ", ".join(quoted)
    if kind.startswith(("datetime", "timezone", "date_")):
        return MSG_TIMESTAMP
    msg = str(err.get("msg", "invalid value"))
    return msg[:1].lower() + msg[1:]


def _render_loc(model: type[BaseModel], loc: tuple[Any, ...], prefix: tuple[Any, ...]) -> str:
    """``('spec', 'services', 0, 'image')`` → ``spec.services[0].image``; map keys in brackets."""
    path = ""
    for part in prefix:
        path = _join(path, part)
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(part, int):
            path += f"[{part}]"
            args = get_args(tp)
            tp = args[0] if origin is list and args else None
        elif origin is dict:
            if part == "[key]":  # pydantic's marker for an error in the key itself
                continue
            path += f"[{part}]"
            args = get_args(tp)
            tp = args[1] if len(args) == 2 else None
        else:
            path = _join(path, part)
            tp = _field_by_alias(tp, str(part)) if _is_model(tp) else None
    return path


def _join(path: str, part: Any) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else str(part)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field_by_alias(model: type[BaseModel], name: str) -> Any:
    for attr, info in model.model_fields.items():
        if (info.alias or attr) == name:
            return info.annotation
    return None


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` down to the type whose shape the loc walks."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


# --------------------------------------------------------------------------------------------
# Pass 2: the rules, on the raw (JSON data model) dict. Wrong types are skipped: pass 1 has them.


class _Errors(list[FieldError]):
    def add(self, field: str, message: str) -> None:
        self.append(FieldError(field=field, message=message))


def _check_type_meta(raw: Mapping[str, Any], kind: str | None) -> list[FieldError]:
    errs = _Errors()
    if "apiVersion" not in raw:
        errs.add("apiVersion", MSG_REQUIRED)
    elif raw["apiVersion"] != API_VERSION:
        errs.add("apiVersion", f'must be "{API_VERSION}"')
    if "kind" not in raw:
        errs.add("kind", MSG_REQUIRED)
    elif kind is not None and raw["kind"] != kind:
        errs.add("kind", f'must be "{kind}"')
    elif kind is None and not (isinstance(raw["kind"], str) and raw["kind"] in _KINDS):
        errs.add("kind", "must be one of " + ", ".join(f'"{k}"' for k in _KINDS))
    return errs


def _check_metadata(meta: Any) -> _Errors:
    errs = _Errors()
    if not isinstance(meta, Mapping):
        return errs
    name = meta.get("name")
    if isinstance(name, str):
        errs += validate_name(name)
    labels = meta.get("labels")
    if isinstance(labels, Mapping):
        if len(labels) > MAX_LABELS:
            errs.add("metadata.labels", f"must have at most {MAX_LABELS} labels")
            return errs
        for key, value in labels.items():
            if not is_label_key(key):
                errs.add(f"metadata.labels[{key}]", MSG_LABEL_KEY)
            if isinstance(value, str) and not is_label_value(value):
                errs.add(f"metadata.labels[{key}]", MSG_LABEL_VALUE)
    annotations = meta.get("annotations")
    if isinstance(annotations, Mapping):
        size = 0
        for key, value in annotations.items():
            if not is_label_key(key):
                errs.add(f"metadata.annotations[{key}]", MSG_LABEL_KEY)
            size += len(key.encode()) + (len(value.encode()) if isinstance(value, str) else 0)
        if size > ANNOTATIONS_MAX_BYTES:
            errs.add("metadata.annotations", MSG_ANNOTATIONS_SIZE)
    return errs


def validate_labels_and_annotations(
    labels: Mapping[str, str], annotations: Mapping[str, str]
) -> list[FieldError]:
    """The errors of ``metadata.labels`` and ``metadata.annotations`` alone (for kinds whose
    names are not DNS labels, such as Events)."""
    return list(_check_metadata({"labels": labels, "annotations": annotations}))


def _items(value: Any, path: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """``(path[i], item)`` for the object items of a list (anything else is pass 1's)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, Mapping):
                yield f"{path}[{i}]", item


def _names(value: Any) -> set[str] | None:
    """Every name declared in a list of named objects, or None when some entry is malformed
    (then references to it cannot be judged and are not reported)."""
    if value is None:
        return set()
    if not isinstance(value, list):
        return None
    names = set()
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            return None
        names.add(item["name"])
    return names


def _check_unique_label(
    errs: _Errors, item: Mapping[str, Any], path: str, what: str, seen: set[str]
) -> None:
    """A required DNS-label ``name``, unique among ``seen``."""
    name = item.get("name")
    if not isinstance(name, str):
        return
    if name == "":
        errs.add(f"{path}.name", MSG_EMPTY)
    elif not is_dns_label(name):
        errs.add(f"{path}.name", MSG_DNS_LABEL)
    elif name in seen:
        errs.add(f"{path}.name", f'duplicate {what} name "{name}"')
    seen.add(name)


def _check_port(errs: _Errors, value: Any, field: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not PORT_MIN <= value <= PORT_MAX:
        errs.add(field, MSG_PORT)


def _check_count(errs: _Errors, value: Any, field: str) -> bool:
    """A list within its ``LIST_LIMITS`` bound (keyed by the field's last name)."""
    limit = LIST_LIMITS.get(field) or LIST_LIMITS[field.rpartition(".")[2]]
    if isinstance(value, list) and len(value) > limit:
        errs.add(field, msg_too_many(limit))
        return False
    return True


def _check_length(errs: _Errors, value: Any, field: str, limit: int) -> None:
    if isinstance(value, str) and len(value) > limit:
        errs.add(field, msg_too_long(limit))


def _check_conditions(errs: _Errors, obj: Mapping[str, Any]) -> None:
    """A condition is looked up by its type: an empty one could never be found."""
    status = obj.get("status")
    if isinstance(status, Mapping):
        for path, condition in _items(status.get("conditions"), "status.conditions"):
            if condition.get("type") == "":
                errs.add(f"{path}.type", MSG_EMPTY)


def _check_project(obj: Mapping[str, Any]) -> _Errors:
    errs = _check_metadata(obj.get("metadata"))
    _check_conditions(errs, obj)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return errs

    fields = ("services", "volumes", "ingress")
    counts = [_check_count(errs, spec.get(f), f"spec.{f}") for f in fields]
    if not all(counts):
        return errs  # a flood of items is not worth reading item by item
    volumes = spec.get("volumes")
    seen_volumes: set[str] = set()
    for path, volume in _items(volumes, "spec.volumes"):
        _check_unique_label(errs, volume, path, "volume", seen_volumes)
    declared_volumes = _names(volumes)

    services = spec.get("services")
    if services is None or services == []:
        errs.add("spec.services", MSG_NO_SERVICES)
    seen_services: set[str] = set()
    host_ports: set[tuple[int, str]] = set()
    for path, service in _items(services, "spec.services"):
        _check_unique_label(errs, service, path, "service", seen_services)
        _check_service(errs, service, path, declared_volumes, host_ports)
        for field, message in check_service_extras(service, path):
            errs.add(field, message)
    for field, message in check_dependencies(services):
        errs.add(field, message)
    declared_services = _names(services)

    seen_ingress: set[str] = set()
    seen_hosts: set[str] = set()
    for path, rule in _items(spec.get("ingress"), "spec.ingress"):
        _check_unique_label(errs, rule, path, "ingress", seen_ingress)
        _check_ingress(errs, rule, path, declared_services, seen_hosts)
    return errs


def _check_service(
    errs: _Errors,
    service: Mapping[str, Any],
    path: str,
    declared_volumes: set[str] | None,
    host_ports: set[tuple[int, str]],
) -> None:
    for field in ("env", "ports", "volumeMounts", "command", "entrypoint"):
        if not _check_count(errs, service.get(field), f"{path}.{field}"):
            return
    for field in ("command", "entrypoint"):
        args = service.get(field)
        if isinstance(args, list):
            for i, arg in enumerate(args):
                _check_length(errs, arg, f"{path}.{field}[{i}]", MAX_ARG_LENGTH)
    image = service.get("image")
    if image == "":
        errs.add(f"{path}.image", MSG_EMPTY)
    elif isinstance(image, str) and not is_image_reference(image):
        errs.add(f"{path}.image", MSG_IMAGE)

    env_names: set[str] = set()
    for env_path, env in _items(service.get("env"), f"{path}.env"):
        name = env.get("name")
        if not isinstance(name, str):
            continue
        if name == "":
            errs.add(f"{env_path}.name", MSG_EMPTY)
        elif not is_env_name(name):
            errs.add(f"{env_path}.name", MSG_ENV_NAME)
        elif name in env_names:
            errs.add(f"{env_path}.name", f'duplicate environment variable "{name}"')
        env_names.add(name)
        _check_length(errs, env.get("value"), f"{env_path}.value", MAX_ARG_LENGTH)

    mount_paths: set[str] = set()
    for mpath, mount in _items(service.get("volumeMounts"), f"{path}.volumeMounts"):
        name = mount.get("name")
        if name == "":
            errs.add(f"{mpath}.name", MSG_EMPTY)
        elif (
            isinstance(name, str) and declared_volumes is not None and name not in declared_volumes
        ):
            errs.add(f"{mpath}.name", f'volume "{name}" is not declared in spec.volumes')
        target = mount.get("mountPath")
        if not isinstance(target, str):
            continue
        if len(target) > MAX_PATH_LENGTH:
            errs.add(f"{mpath}.mountPath", msg_too_long(MAX_PATH_LENGTH))
            continue
        normal = posixpath.normpath(target) if target.startswith("/") else target
        if normal.startswith("//"):  # normpath keeps a leading "//" (POSIX allows it)
            normal = "/" + normal.lstrip("/")
        if target == "":
            errs.add(f"{mpath}.mountPath", MSG_EMPTY)
        elif not target.startswith("/"):
            errs.add(f"{mpath}.mountPath", MSG_ABSOLUTE_PATH)
        elif normal == "/":
            errs.add(f"{mpath}.mountPath", MSG_ROOT_PATH)
        elif normal in mount_paths:
            errs.add(f"{mpath}.mountPath", f'duplicate mount path "{normal}"')
        mount_paths.add(normal)

    for port_path, port in _items(service.get("ports"), f"{path}.ports"):
        _check_port(errs, port.get("containerPort"), f"{port_path}.containerPort")
        host = port.get("hostPort")
        _check_port(errs, host, f"{port_path}.hostPort")
        protocol = port.get("protocol", "tcp")
        if isinstance(host, int) and not isinstance(host, bool) and protocol in ("tcp", "udp"):
            if (host, protocol) in host_ports:
                errs.add(f"{port_path}.hostPort", f"duplicate host port {host}/{protocol}")
            host_ports.add((host, protocol))


def _check_ingress(
    errs: _Errors,
    rule: Mapping[str, Any],
    path: str,
    declared_services: set[str] | None,
    seen_hosts: set[str],
) -> None:
    host = rule.get("host")
    if host == "":
        errs.add(f"{path}.host", MSG_EMPTY)
    elif isinstance(host, str):
        if not is_hostname(host):
            errs.add(f"{path}.host", MSG_HOSTNAME)
        elif host in seen_hosts:
            errs.add(f"{path}.host", f'duplicate ingress host "{host}"')
        seen_hosts.add(host)
    target = rule.get("target")
    if not isinstance(target, Mapping):
        return
    service = target.get("service")
    if service == "":
        errs.add(f"{path}.target.service", MSG_EMPTY)
    elif (
        isinstance(service, str)
        and declared_services is not None
        and service not in declared_services
    ):
        errs.add(f"{path}.target.service", f'service "{service}" is not declared in spec.services')
    _check_port(errs, target.get("port"), f"{path}.target.port")


def _check_node(obj: Mapping[str, Any]) -> _Errors:
    errs = _check_metadata(obj.get("metadata"))
    _check_conditions(errs, obj)
    spec = obj.get("spec")
    if isinstance(spec, Mapping):
        hostname = spec.get("hostname")
        if isinstance(hostname, str) and not is_hostname(hostname.lower()):
            errs.add("spec.hostname", MSG_NODE_HOSTNAME)
    status = obj.get("status")
    network = status.get("network") if isinstance(status, Mapping) else None
    if isinstance(network, Mapping):
        for port in ("agentPort", "proxyPort"):
            _check_port(errs, network.get(port), f"status.network.{port}")
    return errs


# --------------------------------------------------------------------------------------------
# Merging and ordering.


def _dedupe(errors: Iterable[FieldError]) -> list[FieldError]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in errors:
        if (e.field, e.message) not in seen:
            seen.add((e.field, e.message))
            out.append(e)
    return out


_PATH_TOKEN_RE = re.compile(r"\[([^\]]*)\]|\.?([^.\[]+)")


def _document_position(raw: Any, field: str) -> tuple[int, ...]:
    """Where ``field`` sits in the manifest: each step's index in its object or list.

    ``apiVersion`` and ``kind`` come first; a field that is absent (e.g. a missing required
    one) sorts after its present siblings.
    """
    if field in ("apiVersion", "kind"):
        return (0 if field == "apiVersion" else 1,)
    position: list[int] = [2]
    node: Any = raw
    for m in _PATH_TOKEN_RE.finditer(field):
        token = m[1] if m[1] is not None else m[2]
        if isinstance(node, list) and token.isdigit() and int(token) < len(node):
            position.append(int(token))
            node = node[int(token)]
        elif isinstance(node, Mapping) and token in node:
            position.append(list(node).index(token))
            node = node[token]
        else:
            position.append(len(node) if isinstance(node, Mapping | list) else 0)
            node = None
    return tuple(position)


def _in_document_order(raw: Any, errors: list[FieldError]) -> list[FieldError]:
    return sorted(errors, key=lambda e: _document_position(raw, e.field))


def _invalid_detail(kind: str | None, raw: Mapping[str, Any]) -> str:
    meta = raw.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    what = kind or "manifest"
    if is_dns_label(name):
        return f'{what} "{name}" is invalid'
    return f"{what} is invalid"
