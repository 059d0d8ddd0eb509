"""Typed async client of the Caravanserai REST API (list, watch, status, heartbeat).

::

    from caravanserai.client import CaravanseraiClient

    async with CaravanseraiClient("http://localhost:8080") as c:
        projects = await c.projects.list(phase="Pending")
"""

from caravanserai.client.errors import ClientError, ProtocolError, RequestTimeout, ServerUnreachable
from caravanserai.client.http import (
    DEFAULT_TIMEOUT,
    DEFAULT_WATCH_READ_TIMEOUT,
    CaravanseraiClient,
    ConnectionLost,
    ListOptions,
    NodeClient,
    ObjectList,
    ProjectClient,
    ResourceClient,
)
from caravanserai.client.watch import WatchEvent, parse_event

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_WATCH_READ_TIMEOUT",
    "CaravanseraiClient",
    "ClientError",
    "ConnectionLost",
    "ListOptions",
    "NodeClient",
    "ObjectList",
    "ProjectClient",
    "ProtocolError",
    "RequestTimeout",
    "ResourceClient",
    "ServerUnreachable",
    "WatchEvent",
    "parse_event",
]
