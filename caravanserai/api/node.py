"""The Node resource: one machine running ``cara-agent``."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator
from pydantic_core import PydanticCustomError

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


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise PydanticCustomError("port_range", "must be between 1 and 65535")
    return value


# A TCP port a node may advertise (0 and anything above 65535 are not addresses). Checked by
# the model, so no write path (heartbeat, status, create) can store one.
Port = Annotated[int, AfterValidator(_port)]


def parse_node_ip(value: str) -> str:
    """The canonical text of a node's advertised address, or ValueError.

    The server's relay connects to this address (logs, port-forward), so it must be a bare IP
    address: a host name, a path or a port smuggled into it would let a node steer the
    server's requests elsewhere (server-side request forgery). Unspecified, multicast and
    link-local addresses (169.254.169.254 is the cloud metadata service) are never a node.
    """
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None
    if address.is_unspecified or address.is_multicast or address.is_link_local:
        raise ValueError("must be a unicast address a node can be reached at")
    return str(address)


class NodeNetwork(WireModel):
    ip: str | None = None
    dns_name: str | None = None
    mode: NetworkMode | None = None
    agent_port: Port | None = None
    proxy_port: Port | None = None
    # What the agent appends to short ingress hosts (``news`` -> ``news.dev.cara.local``).
    ingress_domain: str | None = None
    throughput: Throughput | None = None

    @field_validator("ip")
    @classmethod
    def _ip_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return parse_node_ip(value)
        except ValueError as exc:
            raise PydanticCustomError("ip_address", str(exc)) from None


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


class NodeHeartbeat(WireModel):
    """``GET /api/v1/nodes/{name}/heartbeat``: when the node's agent last heartbeated.

    Newer than ``status.lastHeartbeat`` while the node's heartbeats change nothing (they
    renew the node's lease and leave the Node as it is, see docs/agent.md)."""

    kind: Literal["NodeHeartbeat"] = "NodeHeartbeat"
    node_name: str
    last_heartbeat: Timestamp | None = None


CONDITION_READY = "Ready"
