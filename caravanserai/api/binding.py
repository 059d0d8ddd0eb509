"""Bindings: the scheduler's placement of Pending projects on nodes, many per request.

``POST /api/v1/bindings`` (kube-apiserver's ``pods/binding``, taking a list): every binding
is its own write — its own revision, its own event, its own resourceVersion precondition —
but the whole list is one transaction. A binding that is stale (the project changed since the
scheduler's cache saw it, is no longer Pending, or is gone) is skipped and reported; the
others still bind.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from caravanserai.api.base import API_VERSION, WireModel

MAX_BINDINGS = 1000
"""Bindings one request may carry."""


class Binding(WireModel):
    """Place project ``name`` on ``node`` if it is still at ``resourceVersion`` (when set)."""

    name: str
    node: str
    resource_version: str | None = None
    reason: str | None = None
    message: str | None = None


class BindingList(WireModel):
    """Body of ``POST /api/v1/bindings``."""

    api_version: Literal["caravanserai/v1"] = API_VERSION
    kind: Literal["BindingList"] = "BindingList"
    items: list[Binding] = Field(max_length=MAX_BINDINGS)


class BindingOutcome(StrEnum):
    BOUND = "Bound"
    CONFLICT = "Conflict"  # stale resourceVersion, or a transition the phase machine refuses
    NOT_FOUND = "NotFound"
    INVALID = "Invalid"


class BindingResult(WireModel):
    """What happened to one binding; ``resourceVersion`` is the bound project's new one."""

    name: str
    node: str
    outcome: BindingOutcome
    resource_version: str | None = None
    message: str | None = None


class BindingResultList(WireModel):
    """Response of ``POST /api/v1/bindings``: one result per binding, in request order."""

    api_version: Literal["caravanserai/v1"] = API_VERSION
    kind: Literal["BindingResultList"] = "BindingResultList"
    items: list[BindingResult]
