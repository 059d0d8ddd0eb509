"""The authorizer's pure decisions: role order, join tokens, the node rules (including the
one a reporting route such as Events uses), and the node field-selector check."""

from __future__ import annotations

import pytest

from caravanserai.server.access import ROUTE_ACCESS, Access, NodeRule
from caravanserai.server.authn import Role
from caravanserai.server.authz import (
    NodeRequest,
    node_decision,
    selects_only_node,
    user_allows,
)


@pytest.mark.parametrize(
    ("role", "least", "allowed"),
    [
        (Role.VIEW, Role.VIEW, True),
        (Role.VIEW, Role.EDIT, False),
        (Role.EDIT, Role.EDIT, True),
        (Role.EDIT, Role.ADMIN, False),
        (Role.ADMIN, Role.VIEW, True),
        (Role.JOIN, Role.VIEW, False),  # a join token reads nothing
        (Role.NODE, Role.VIEW, False),  # nodes are decided by their rule, never by role
    ],
)
def test_roles_are_ordered_and_join_tokens_only_join(
    role: Role, least: Role, allowed: bool
) -> None:
    assert user_allows(role, Access("projects", "get", least)) is allowed


def test_a_join_token_may_only_call_join_routes() -> None:
    assert user_allows(Role.JOIN, ROUTE_ACCESS["joinNode"])
    assert not user_allows(Role.JOIN, ROUTE_ACCESS["createNode"])
    assert not user_allows(Role.VIEW, ROUTE_ACCESS["joinNode"])


def test_public_routes_need_no_role() -> None:
    assert user_allows(Role.JOIN, ROUTE_ACCESS["healthz"])


@pytest.mark.parametrize(
    ("selector", "node_refs", "only_own"),
    [
        ("status.nodeRef=a", [], True),
        ("status.nodeRef==a,status.phase=Running", [], True),
        ("status.nodeRef = a", ["a"], True),
        ("status.nodeRef=a", ["a,b"], False),  # an OR-set reaching another node
        ("status.nodeRef!=b", [], False),
        ("", [], False),
        ("status.nodeRef=ab", [], False),
    ],
)
def test_a_node_lists_only_with_its_own_field_selector(
    selector: str, node_refs: list[str], only_own: bool
) -> None:
    assert selects_only_node({"fieldSelector": selector}, node_refs, "a") is only_own


def _req(rule: NodeRule, **kw: object) -> NodeRequest:
    values: dict[str, object] = {"node": "a", "rule": rule, "verb": "create", "name": None}
    values.update(kw)
    return NodeRequest(**values)  # type: ignore[arg-type]


def test_node_rules() -> None:
    assert node_decision(_req(NodeRule.DENY)) is not None
    assert node_decision(_req(NodeRule.ANY)) is None
    assert node_decision(_req(NodeRule.OWN_NODE, name="a")) is None
    assert node_decision(_req(NodeRule.OWN_NODE, name="b")) is not None
    assert node_decision(_req(NodeRule.REGISTER_SELF, body={"metadata": {"name": "a"}})) is None
    assert node_decision(_req(NodeRule.REGISTER_SELF, body={"metadata": {"name": "b"}}))
    assert node_decision(_req(NodeRule.REGISTER_SELF, body=["not", "an", "object"]))
    assert node_decision(_req(NodeRule.BOUND_PROJECT, stored_node_ref="a")) is None
    assert node_decision(_req(NodeRule.BOUND_PROJECT, stored_node_ref="b")) is not None
    assert node_decision(_req(NodeRule.BOUND_PROJECT, stored_node_ref=None)) is not None


@pytest.mark.parametrize(
    ("body", "about_node_ref", "allowed"),
    [
        ({"involvedObject": {"kind": "Node", "name": "a"}}, None, True),
        ({"involvedObject": {"kind": "Node", "name": "b"}}, None, False),
        ({"regarding": {"kind": "Project", "name": "p"}}, "a", True),
        ({"involvedObject": {"kind": "Project", "name": "p"}}, "b", False),
        ({"involvedObject": {"kind": "Project", "name": "p"}}, None, False),
        ({}, None, False),
        ({"involvedObject": "Node/a"}, None, False),
    ],
)
def test_a_node_reports_only_about_itself_and_its_projects(
    body: dict[str, object], about_node_ref: str | None, allowed: bool
) -> None:
    req = _req(NodeRule.ABOUT_OWN_OBJECTS, body=body, about_node_ref=about_node_ref)
    assert (node_decision(req) is None) is allowed
