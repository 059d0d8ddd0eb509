"""Registration and heartbeat logic of the node task (fake API)."""

from __future__ import annotations

from typing import Any

from agent.node import NodeAgent, NodeFacts
from caravanserai.api import (
    AlreadyExists,
    Heartbeat,
    Node,
    NodeInfo,
    NodeNetwork,
    NodeState,
    NotFound,
)


class FakeNodes:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.beats: list[Heartbeat] = []
        self.updates = 0

    async def create(self, node: Node) -> Node:
        if node.metadata.name in self.nodes:
            raise AlreadyExists(node.metadata.name)
        self.nodes[node.metadata.name] = node
        return node

    async def get(self, name: str) -> Node:
        if name not in self.nodes:
            raise NotFound(name)
        return self.nodes[name].model_copy(deep=True)

    async def update(self, node: Node) -> Node:
        self.updates += 1
        self.nodes[node.metadata.name] = node
        return node

    async def heartbeat(self, name: str, hb: Heartbeat) -> None:
        if name not in self.nodes:
            raise NotFound(name)
        self.beats.append(hb)


class FakeClient:
    def __init__(self) -> None:
        self.nodes = FakeNodes()


FACTS = NodeFacts(
    info=NodeInfo(hostname="host-a", docker_version="28.0", agent_version="0.1.0"),
    capacity={"cpu": "2", "memory": "1024Ki"},
    network=NodeNetwork(ip="10.0.0.9", agent_port=9090, proxy_port=8081),
)


def agent(client: Any, **kw: Any) -> NodeAgent:
    return NodeAgent(client, "n1", FACTS, interval=1.0, **kw)


async def test_register_creates_and_sends_everything() -> None:
    client = FakeClient()
    await agent(client).register()
    assert client.nodes.nodes["n1"].spec.hostname == "host-a"
    [hb] = client.nodes.beats
    assert hb.state == NodeState.READY
    assert hb.info == FACTS.info and hb.capacity == FACTS.capacity
    assert hb.network == FACTS.network


async def test_register_updates_an_existing_node_keeping_admin_fields() -> None:
    client = FakeClient()
    existing = Node.model_validate(
        {"metadata": {"name": "n1"}, "spec": {"hostname": "old", "unschedulable": True}}
    )
    client.nodes.nodes["n1"] = existing
    await agent(client).register()
    node = client.nodes.nodes["n1"]
    assert node.spec.hostname == "host-a" and node.spec.unschedulable is True


async def test_beat_registers_again_after_404() -> None:
    client = FakeClient()
    a = agent(client)
    await a.register()
    del client.nodes.nodes["n1"]  # the server forgot the node
    await a.beat()
    assert "n1" in client.nodes.nodes
    assert client.nodes.beats[-1].info is not None  # a full heartbeat again


async def test_engine_down_reports_not_ready() -> None:
    client = FakeClient()

    async def down() -> bool:
        return False

    a = agent(client, healthy=down)
    await a.register()
    await a.beat()
    assert client.nodes.beats[-1].state == NodeState.NOT_READY
