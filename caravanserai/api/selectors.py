"""Label and field selectors (Kubernetes syntax), parsed once and matched against objects.

Label selector: comma-separated requirements ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k`` (exists), ``!k`` (does not exist).
Field selector: ``metadata.name``, ``status.phase``, ``status.nodeRef`` (Nodes: ``status.state``;
Events: ``involvedObject.kind``, ``involvedObject.name``) with ``=``, ``==`` or ``!=``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from caravanserai.api.problems import BadRequest

FIELD_PATHS: dict[str, tuple[str, ...]] = {
    "metadata.name": ("metadata", "name"),
    "status.phase": ("status", "phase"),
    "status.nodeRef": ("status", "nodeRef"),
    "status.state": ("status", "state"),
    # Events: the object an event is about.
    "involvedObject.kind": ("involvedObject", "kind"),
    "involvedObject.name": ("involvedObject", "name"),
}

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")
# A label value: empty, or ≤63 alphanumerics, '-', '_', '.', alphanumeric at both ends.
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_LABEL_VALUE_RE = re.compile(rf"{_VALUE}?")

# The whole grammar as one regular expression, published as the ``pattern`` of the
# ``labelSelector`` / ``fieldSelector`` query parameters (OpenAPI) and enforced on top of
# the term parser below, so that the document and the server accept the same strings.
# Blanks are spaces and tabs only (the parser's ``\s`` would also take Unicode spaces that
# an ECMAScript pattern does not); empty terms between commas are allowed, as the parser
# skips them.
_B = r"[ \t]*"
_LABEL_TERM = (
    f"{_B}(?:!?{_B}{_KEY}"
    f"|{_KEY}{_B}(?:==|=|!=){_B}{_VALUE}?"
    f"|{_KEY}[ \\t]+(?:in|notin){_B}\\((?:{_B},)*{_B}{_VALUE}{_B}(?:,{_B}(?:{_VALUE}{_B})?)*\\))"
    f"{_B}"
)
_FIELD_TERM = (
    f"{_B}(?:{'|'.join(re.escape(k) for k in FIELD_PATHS)}){_B}(?:==|=|!=)"
    "[^,()\\u0000]*"
)
LABEL_SELECTOR_PATTERN = f"(?:{_LABEL_TERM}|{_B})(?:,(?:{_LABEL_TERM}|{_B}))*"
FIELD_SELECTOR_PATTERN = f"(?:{_FIELD_TERM}|{_B})(?:,(?:{_FIELD_TERM}|{_B}))*"
_LABEL_SELECTOR_RE = re.compile(LABEL_SELECTOR_PATTERN)
_FIELD_SELECTOR_RE = re.compile(FIELD_SELECTOR_PATTERN)


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, actual: str | None) -> bool:
        if self.op == "exists":
            return actual is not None
        if self.op == "!exists":
            return actual is None
        if self.op in ("=", "in"):
            return actual is not None and actual in self.values
        # != and notin match objects without the key, as in Kubernetes.
        return actual is None or actual not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _label_values(term: str, values: frozenset[str]) -> frozenset[str]:
    """``values`` if each is a possible label value (a typo like ``a=b c`` matches nothing)."""
    for value in values:
        if not _LABEL_VALUE_RE.fullmatch(value):
            raise BadRequest(f"invalid label selector term {term.strip()!r}: bad value {value!r}")
    return values


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector; raise BadRequest naming the bad term."""
    if not text:
        return []
    if not text.strip():
        _check_whole(_LABEL_SELECTOR_RE, text, "label")
        return []
    reqs = []
    for term in _split_top_level(text):
        if m := _SET_RE.match(term):
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            if not values:
                raise BadRequest(f"invalid label selector term {term.strip()!r}: empty set")
            reqs.append(Requirement(m["key"], m["op"], _label_values(term, values)))
        elif m := _CMP_RE.match(term):
            op = "!=" if m["op"] == "!=" else "="
            reqs.append(Requirement(m["key"], op, _label_values(term, frozenset({m["value"]}))))
        elif m := _EXISTS_RE.match(term):
            reqs.append(Requirement(m["key"], "!exists" if m["neg"] else "exists"))
        else:
            raise BadRequest(f"invalid label selector term {term.strip()!r}")
    _check_whole(_LABEL_SELECTOR_RE, text, "label")
    return reqs


def parse_field_selector(text: str | None) -> list[Requirement]:
    """Parse a field selector over the supported fields; raise BadRequest otherwise."""
    if not text:
        return []
    if not text.strip():
        _check_whole(_FIELD_SELECTOR_RE, text, "field")
        return []
    reqs = []
    for term in _split_top_level(text):
        m = _CMP_RE.match(term)
        if not m:
            raise BadRequest(f"invalid field selector term {term.strip()!r}")
        if m["key"] not in FIELD_PATHS:
            supported = ", ".join(FIELD_PATHS)
            raise BadRequest(f"field selector {m['key']!r} is not supported (use {supported})")
        op = "!=" if m["op"] == "!=" else "="
        reqs.append(Requirement(m["key"], op, frozenset({m["value"]})))
    _check_whole(_FIELD_SELECTOR_RE, text, "field")
    return reqs


def _check_whole(pattern: re.Pattern[str], text: str, what: str) -> None:
    """The published pattern on top of the term parser: blanks are spaces and tabs only, and
    a field value holds no ',', '(' or ')' (the document and the server agree)."""
    if not pattern.fullmatch(text):
        raise BadRequest(
            f"invalid {what} selector {text!r}: blanks are spaces or tabs, values hold no "
            "',', '(' or ')'"
        )


def field_value(obj: Mapping[str, Any], key: str) -> str:
    """The value a field selector on ``key`` (one of ``FIELD_PATHS``) compares with."""
    return _field_value(obj, key)


def _field_value(obj: Mapping[str, Any], key: str) -> str:
    value: Any = obj
    for part in FIELD_PATHS[key]:
        value = value.get(part) if isinstance(value, Mapping) else None
    # An unset field selects as the empty string, as in Kubernetes (status.nodeRef=), also
    # when a whole level is missing (an object without status is not scheduled).
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Selector:
    """A conjunction of label requirements, field requirements and allowed values per field.

    ``any_of`` holds OR-sets such as the repeated ``?phase=`` query parameter:
    ``{"status.phase": {"Running", "Failed"}}``.
    """

    labels: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()
    any_of: tuple[tuple[str, frozenset[str]], ...] = field(default=())

    @classmethod
    def parse(
        cls,
        label_selector: str | None = None,
        field_selector: str | None = None,
        any_of: Mapping[str, frozenset[str] | set[str]] | None = None,
    ) -> Selector:
        for key in any_of or {}:
            if key not in FIELD_PATHS:
                raise BadRequest(f"field {key!r} cannot be selected on")
        return cls(
            tuple(parse_label_selector(label_selector)),
            tuple(parse_field_selector(field_selector)),
            tuple((k, frozenset(v)) for k, v in (any_of or {}).items() if v),
        )

    @property
    def empty(self) -> bool:
        return not (self.labels or self.fields or self.any_of)

    def required_values(self, key: str) -> frozenset[str] | None:
        """The values field ``key`` must take for an object to match (None: any value).

        Used to index watchers (``status.nodeRef=n1`` is only ever interested in objects
        whose nodeRef is, or was, ``n1``). Empty when the terms contradict each other.
        """
        allowed: frozenset[str] | None = None
        for r in self.fields:
            if r.key == key and r.op == "=":
                allowed = r.values if allowed is None else allowed & r.values
        for k, values in self.any_of:
            if k == key:
                allowed = values if allowed is None else allowed & values
        return allowed

    def matches(self, obj: Mapping[str, Any] | None) -> bool:
        """Whether the object (its JSON/wire dict form) is selected. None never matches."""
        if obj is None:
            return False
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if not all(r.matches(labels.get(r.key)) for r in self.labels):
            return False
        if not all(r.matches(_field_value(obj, r.key)) for r in self.fields):
            return False
        return all(_field_value(obj, key) in values for key, values in self.any_of)


EVERYTHING = Selector()
