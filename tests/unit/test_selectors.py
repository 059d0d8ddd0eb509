"""Label and field selectors: parsing (and its errors) and matching."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caravanserai.api import BadRequest, Selector
from caravanserai.api.selectors import (
    EVERYTHING,
    FIELD_SELECTOR_PATTERN,
    LABEL_SELECTOR_PATTERN,
    Requirement,
    parse_field_selector,
    parse_label_selector,
)


def req(key: str, op: str, *values: str) -> Requirement:
    return Requirement(key, op, frozenset(values))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, []),
        ("", []),
        ("   ", []),
        ("app=web", [req("app", "=", "web")]),
        ("app==web", [req("app", "=", "web")]),
        (" app = web ", [req("app", "=", "web")]),
        ("app!=web", [req("app", "!=", "web")]),
        ("app=", [req("app", "=", "")]),
        ("app", [req("app", "exists")]),
        ("!app", [req("app", "!exists")]),
        ("! app", [req("app", "!exists")]),
        ("tier in (a, b)", [req("tier", "in", "a", "b")]),
        ("tier notin (a)", [req("tier", "notin", "a")]),
        ("tier notin(a,b)", [req("tier", "notin", "a", "b")]),
        ("app.kubernetes.io/name=blog", [req("app.kubernetes.io/name", "=", "blog")]),
        (
            "app=web,tier in (front,back),!legacy,env",
            [
                req("app", "=", "web"),
                req("tier", "in", "front", "back"),
                req("legacy", "!exists"),
                req("env", "exists"),
            ],
        ),
    ],
)
def test_parse_label_selector(text: str | None, expected: list[Requirement]) -> None:
    assert parse_label_selector(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a b",  # two keys
        "!a=b",  # negated comparison
        "a in b",  # set without parentheses
        "a in (b",  # unclosed
        "a in (b,c))",  # extra parenthesis
        "=b",  # no key
        "(a)",
        "-a=b",  # key must start alphanumeric
        "a=b c",  # not a label value: would silently match nothing
        "a=b=c",
        "a in (x, y z)",
        "a in ()",  # empty set
        "a=" + "v" * 64,
    ],
)
def test_parse_label_selector_errors(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_label_selector(text)
    assert info.value.status == 400
    assert "invalid label selector term" in info.value.detail


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status.nodeRef=", [req("status.nodeRef", "=", "")]),
        ("status.nodeRef=node-01", [req("status.nodeRef", "=", "node-01")]),
        ("status.phase!=Running", [req("status.phase", "!=", "Running")]),
        ("metadata.name==web", [req("metadata.name", "=", "web")]),
        (
            "status.phase=Running,status.nodeRef=n1",
            [req("status.phase", "=", "Running"), req("status.nodeRef", "=", "n1")],
        ),
        ("status.state=Ready", [req("status.state", "=", "Ready")]),
    ],
)
def test_parse_field_selector(text: str, expected: list[Requirement]) -> None:
    assert parse_field_selector(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spec.hostname=x", "field selector 'spec.hostname' is not supported"),
        ("status.phase in (Running)", "invalid field selector term"),
        ("status.phase", "invalid field selector term"),
        ("!status.phase", "invalid field selector term"),
    ],
)
def test_parse_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        parse_field_selector(text)


def test_any_of_rejects_unknown_fields() -> None:
    with pytest.raises(BadRequest, match="cannot be selected on"):
        Selector.parse(any_of={"spec.services": {"x"}})


# --------------------------------------------------------------------------------------------
# Matching.


def project(labels: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "demo"}, "spec": {}}
    if labels is not None:
        obj["metadata"]["labels"] = labels
    if status:
        obj["status"] = status
    return obj


WEB = project({"app": "web", "tier": "front"}, phase="Running", nodeRef="node-01")
DB = project({"app": "db"}, phase="Pending")
BARE = project()  # no labels, no status


@pytest.mark.parametrize(
    ("selector", "web", "db", "bare"),
    [
        ("app=web", True, False, False),
        ("app!=web", False, True, True),  # != matches objects without the key
        ("app in (web,db)", True, True, False),
        ("app notin (web)", False, True, True),  # notin matches objects without the key
        ("tier", True, False, False),
        ("!tier", False, True, True),
        ("app=web,tier=front", True, False, False),
        ("app=web,tier=back", False, False, False),
        ("app=", False, False, False),  # the empty value, not "missing"
        ("", True, True, True),
    ],
)
def test_label_matching(selector: str, web: bool, db: bool, bare: bool) -> None:
    s = Selector.parse(label_selector=selector)
    assert (s.matches(WEB), s.matches(DB), s.matches(BARE)) == (web, db, bare)


def test_label_with_empty_value_matches_empty_selector_value() -> None:
    obj = project({"app": ""})
    assert Selector.parse(label_selector="app=").matches(obj)
    assert Selector.parse(label_selector="app").matches(obj)
    assert not Selector.parse(label_selector="app!=").matches(obj)


@pytest.mark.parametrize(
    ("selector", "web", "db", "bare"),
    [
        ("status.nodeRef=node-01", True, False, False),
        # An unset nodeRef selects as the empty string: "not scheduled yet".
        ("status.nodeRef=", False, True, True),
        ("status.nodeRef!=", True, False, False),
        ("status.nodeRef!=node-01", False, True, True),
        ("status.phase=Running", True, False, False),
        ("status.phase!=Running", False, True, True),
        ("status.phase=", False, False, True),
        ("metadata.name=demo", True, True, True),
        ("metadata.name=other", False, False, False),
        ("status.phase=Running,status.nodeRef=node-01", True, False, False),
    ],
)
def test_field_matching(selector: str, web: bool, db: bool, bare: bool) -> None:
    s = Selector.parse(field_selector=selector)
    assert (s.matches(WEB), s.matches(DB), s.matches(BARE)) == (web, db, bare)


def test_null_node_ref_is_unset() -> None:
    obj = project(phase="Pending", nodeRef=None)
    assert Selector.parse(field_selector="status.nodeRef=").matches(obj)
    assert not Selector.parse(field_selector="status.nodeRef!=").matches(obj)


def test_field_matching_on_malformed_objects() -> None:
    s = Selector.parse(field_selector="status.nodeRef=")
    assert s.matches({"metadata": {"name": "x"}, "status": None})
    assert s.matches({"metadata": {"name": "x"}, "status": "garbage"})


def test_node_state_field() -> None:
    ready = {"metadata": {"name": "n1"}, "status": {"state": "Ready"}}
    s = Selector.parse(field_selector="status.state=Ready")
    assert s.matches(ready)
    assert not s.matches({"metadata": {"name": "n2"}, "status": {"state": "NotReady"}})


def test_any_of_is_an_or_within_a_field_and_an_and_across() -> None:
    s = Selector.parse(any_of={"status.phase": {"Running", "Failed"}})
    assert s.matches(WEB)
    assert not s.matches(DB)
    assert not s.matches(BARE)
    both = Selector.parse(
        label_selector="app",
        any_of={"status.phase": {"Running", "Pending"}, "status.nodeRef": {""}},
    )
    assert not both.matches(WEB)  # has a nodeRef
    assert both.matches(DB)
    assert not both.matches(BARE)  # no label


def test_empty_any_of_sets_are_ignored() -> None:
    s = Selector.parse(any_of={"status.phase": set()})
    assert s.empty
    assert s.matches(BARE)


def test_everything_and_none() -> None:
    assert EVERYTHING.empty
    assert EVERYTHING.matches(BARE)
    assert EVERYTHING.matches({})
    assert not EVERYTHING.matches(None)
    assert not Selector.parse(label_selector="app").empty
    assert not Selector.parse(field_selector="status.phase=Running").empty


def test_labels_null_is_no_labels() -> None:
    obj = {"metadata": {"name": "x", "labels": None}}
    assert Selector.parse(label_selector="!app").matches(obj)
    assert not Selector.parse(label_selector="app").matches(obj)


# --------------------------------------------------------------------------------------------
# The published patterns (OpenAPI labelSelector / fieldSelector) say what the parsers take.


def _parses(parse: Any, text: str) -> bool:
    try:
        parse(text)
    except BadRequest:
        return False
    return True


@pytest.mark.parametrize(
    ("pattern", "parse"),
    [
        (LABEL_SELECTOR_PATTERN, parse_label_selector),
        (FIELD_SELECTOR_PATTERN, parse_field_selector),
    ],
)
def test_every_string_of_the_published_pattern_parses(pattern: str, parse: Any) -> None:
    @settings(max_examples=300, database=None, deadline=None)
    @given(st.from_regex(f"^{pattern}$", fullmatch=True))
    def check(text: str) -> None:
        assert _parses(parse, text), text

    check()


_SELECTOR_ALPHABET = st.sampled_from(
    [*"ab1-_./=!(), \t\u3000\x1c", "in", "notin", "metadata.name", "status.phase"]
)


@pytest.mark.parametrize(
    ("pattern", "parse"),
    [
        (LABEL_SELECTOR_PATTERN, parse_label_selector),
        (FIELD_SELECTOR_PATTERN, parse_field_selector),
    ],
)
def test_what_the_parser_takes_matches_the_published_pattern(pattern: str, parse: Any) -> None:
    compiled = re.compile(pattern)

    @settings(max_examples=2000, database=None, deadline=None)
    @given(st.lists(_SELECTOR_ALPHABET, max_size=12).map("".join))
    def check(text: str) -> None:
        assert _parses(parse, text) == (compiled.fullmatch(text) is not None), text

    check()


def test_unicode_blanks_and_parentheses_in_values_are_refused() -> None:
    with pytest.raises(BadRequest, match="invalid label selector"):
        parse_label_selector("app=web\u3000")
    with pytest.raises(BadRequest, match="invalid field selector"):
        parse_field_selector("metadata.name=(web)")
