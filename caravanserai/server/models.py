"""Request and response bodies that belong to the HTTP API only (not stored resources)."""

from __future__ import annotations

from caravanserai.api.base import WireModel
from caravanserai.api.project import ProjectPhase


class PhasePatch(WireModel):
    """Body of ``PATCH /api/v1/projects/{name}/status`` (the agent's and controllers' write).

    ``nodeRef`` is required to enter ``Scheduled`` when the project has no node yet; entering
    ``Pending`` clears it. ``resourceVersion``, when given, is a precondition (409 if stale).
    """

    phase: ProjectPhase
    reason: str | None = None
    message: str | None = None
    node_ref: str | None = None
    resource_version: str | None = None


class WhoAmI(WireModel):
    """Body of ``GET /api/v1/whoami``: the caller's token name, role and (node credentials)
    node."""

    name: str
    role: str
    node: str | None = None


class VersionInfo(WireModel):
    """Body of ``GET /api/v1/version``."""

    version: str
    api_version: str
    python: str
