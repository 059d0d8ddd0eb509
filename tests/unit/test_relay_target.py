"""The relay's target is built only from a node's validated IP and port (no SSRF)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from caravanserai.api.node import Node
from caravanserai.api.problems import Conflict
from caravanserai.server.relay import agent_base_url


def node(network: dict[str, Any]) -> Node:
    return Node.model_validate(
        {"metadata": {"name": "n1"}, "status": {"network": network}}
    )


@pytest.mark.parametrize(
    ("network", "url"),
    [
        ({"ip": "10.0.0.5"}, "http://10.0.0.5:9090"),
        ({"ip": "10.0.0.5", "agentPort": 1}, "http://10.0.0.5:1"),
        ({"ip": "2001:db8::1", "agentPort": 65535}, "http://[2001:db8::1]:65535"),
        ({"ip": "127.0.0.1", "agentPort": 18999}, "http://127.0.0.1:18999"),
    ],
)
def test_the_url_is_the_nodes_address_and_nothing_else(network: dict[str, Any], url: str) -> None:
    assert agent_base_url(node(network)) == url


@pytest.mark.parametrize(
    "network",
    [
        {"ip": "localhost/latest/meta-data/iam?x="},
        {"ip": "10.0.0.5#@evil"},
        {"ip": "[::1]"},
        {"ip": "169.254.169.254"},
        {"ip": "224.0.0.1"},
        {"ip": "10.0.0.5", "agentPort": 70000},
        {"ip": "10.0.0.5", "agentPort": -1},
    ],
)
def test_a_node_cannot_name_anything_but_an_ip_and_a_port(network: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        node(network)


def test_a_node_without_an_address_is_a_conflict_not_a_server_error() -> None:
    # The project's node is not ready to be relayed to (like "not on a node"): 409, not 5xx.
    with pytest.raises(Conflict):
        agent_base_url(node({}))
