"""The Node resource: one machine running ``cara-agent``."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from caravanserai.api.base import API_VERSION, Condition, ListMeta, ObjectMeta, Timestamp, WireModel


class NodeState(StrEnum):
    READY = "Ready"
    NOT_READY = "NotReady"
    DRAINING = "Draining"


class NetworkMode(StrEnum):
    DIRECT = "Direct"
    DERP = "DERP"


class Throughput(WireModel):
    download: str | None = None
    upload: str | None = None
    last_test_time: Timestamp | None = None


class NodeNetwork(WireModel):
    ip: str | None = None
    dns_name: str | None = None
    mode: NetworkMode | None = None
    agent_port: int | None = None
    proxy_port: int | None = None
    # What the agent appends to short ingress hosts (``news`` -> ``news.dev.cara.local``).
    ingress_domain: str | None = None
    throughput: Throughput | None = None


class NodeInfo(WireModel):
    hostname: str | None = None
    kernel_version: str | None = None
    os_image: str | None = None
    architecture: str | None = None
    docker_version: str | None = None
    agent_version: str | None = None


class NodeSpec(WireModel):
    hostname: str | None = None
    unschedulable: bool = False


class NodeStatus(WireModel):
    state: NodeState | None = None
    network: NodeNetwork = Field(default_factory=NodeNetwork)
    # Kubernetes quantity strings ("2", "4Gi"); informational.
    capacity: dict[str, str] = Field(default_factory=dict)
    allocatable: dict[str, str] = Field(default_factory=dict)
    info: NodeInfo = Field(default_factory=NodeInfo)
    last_heartbeat: Timestamp | None = None
    conditions: list[Condition] = Field(default_factory=list)


class Node(WireModel):
    api_version: Literal["caravanserai/v1"] = API_VERSION
    kind: Literal["Node"] = "Node"
    metadata: ObjectMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)


class NodeList(WireModel):
    api_version: Literal["caravanserai/v1"] = API_VERSION
    kind: Literal["NodeList"] = "NodeList"
    metadata: ListMeta
    items: list[Node]


class Heartbeat(WireModel):
    """Body of ``POST /api/v1/nodes/{name}/heartbeat``; every field optional."""

    state: NodeState | None = None
    network: NodeNetwork | None = None
    capacity: dict[str, str] | None = None
    allocatable: dict[str, str] | None = None
    info: NodeInfo | None = None


CONDITION_READY = "Ready"
