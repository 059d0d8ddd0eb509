"""A node may not steer the server's relay anywhere (issue 11's server-side request forgery).

The reproduction: a heartbeat set ``status.network.ip`` to ``localhost/latest/meta-data/iam?x=``
and ``agentPort`` to 70000 or -1; a later ``caractrl logs`` made the server fetch that URL.
Now the heartbeat (and a status write) is a 422 naming the field, and nothing is stored.
"""

from __future__ import annotations

from typing import Any

import pytest
import server_support
from server_support import Api
from test_server_api import assert_problem

api = pytest.fixture(server_support.serve_api, name="api")

BAD_NETWORKS: list[tuple[dict[str, Any], str]] = [
    ({"ip": "localhost/latest/meta-data/iam?x="}, "network.ip"),
    ({"ip": "127.0.0.1:18999/api"}, "network.ip"),
    ({"ip": "example.com"}, "network.ip"),
    ({"ip": "169.254.169.254"}, "network.ip"),  # the cloud metadata service
    ({"ip": "0.0.0.0"}, "network.ip"),
    ({"ip": "fe80::1"}, "network.ip"),
    ({"ip": ""}, "network.ip"),
    ({"agentPort": 70000}, "network.agentPort"),
    ({"agentPort": -1}, "network.agentPort"),
    ({"agentPort": 0}, "network.agentPort"),
    ({"proxyPort": 65536}, "network.proxyPort"),
]


@pytest.mark.parametrize(("network", "field"), BAD_NETWORKS)
async def test_a_heartbeat_with_a_bad_address_is_422_and_changes_nothing(
    api: Api, network: dict[str, Any], field: str
) -> None:
    await api.create_node("n1")
    status, _, _ = await api.call(
        "POST", "/api/v1/nodes/n1/heartbeat", {"network": {"ip": "10.0.0.5", "agentPort": 9090}}
    )
    assert status == 204
    before = await api.get("nodes", "n1")

    _, problem, resp = await api.call("POST", "/api/v1/nodes/n1/heartbeat", {"network": network})
    assert_problem(resp, problem, 422)
    assert [e["field"] for e in problem["errors"]] == [field]

    node = dict(before)
    node["status"] = {**before["status"], "network": {**before["status"]["network"], **network}}
    _, problem, resp = await api.call("PUT", "/api/v1/nodes/n1/status", node)
    assert_problem(resp, problem, 422)
    assert [e["field"] for e in problem["errors"]] == [f"status.{field}"]

    after = await api.get("nodes", "n1")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_ipv6_and_ipv4_addresses_are_accepted_in_canonical_form(api: Api) -> None:
    await api.create_node("n1")
    for given, stored in (("2001:DB8::0:1", "2001:db8::1"), (" 10.1.2.3 ", "10.1.2.3")):
        status, body, _ = await api.call(
            "POST", "/api/v1/nodes/n1/heartbeat", {"network": {"ip": given, "agentPort": 1}}
        )
        assert status == 204, body
        assert (await api.get("nodes", "n1"))["status"]["network"]["ip"] == stored


async def test_the_relay_refuses_a_node_whose_stored_address_predates_validation(
    api: Api,
) -> None:
    """A row written before this check (straight into the store) is never connected to."""
    await api.create_project("p1")
    await api.create_node("n1")
    await api.patch_phase("p1", "Scheduled", nodeRef="n1")

    def poison(node: dict[str, Any]) -> dict[str, Any]:
        node["status"]["network"] = {"ip": "localhost/latest/meta-data/iam?x=", "agentPort": 80}
        return node

    await api.store.update("Node", "n1", poison)
    _, problem, resp = await api.call("GET", "/api/v1/projects/p1/logs")
    assert_problem(resp, problem, 503)
    assert "invalid address" in problem["detail"]
