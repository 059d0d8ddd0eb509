"""Lease: who holds a named lock, until when (Kubernetes' ``coordination.k8s.io`` Lease).

Leader election writes it through the API like any object (``/api/v1/leases``), with a
resourceVersion precondition on every acquire, renew and release, so candidates may be
in-process controllers or programs of their own over HTTP.

Expiry is judged the way client-go does: a candidate notes, on its own monotonic clock,
when it last saw the lease change, and takes it over only after ``leaseDurationSeconds``
without a change. No two machines' clocks are ever compared; ``renewTime`` is informative.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from caravanserai.api.base import API_VERSION, ListMeta, ObjectMeta, Timestamp, WireModel


class LeaseSpec(WireModel):
    holder_identity: str | None = None
    lease_duration_seconds: float | None = Field(default=None, gt=0)
    acquire_time: Timestamp | None = None
    renew_time: Timestamp | None = None
    lease_transitions: int = Field(default=0, ge=0)


class Lease(WireModel):
    api_version: Literal["caravanserai/v1"] = API_VERSION
    kind: Literal["Lease"] = "Lease"
    metadata: ObjectMeta
    spec: LeaseSpec = Field(default_factory=LeaseSpec)


class LeaseList(WireModel):
    api_version: Literal["caravanserai/v1"] = API_VERSION
    kind: Literal["LeaseList"] = "LeaseList"
    metadata: ListMeta
    items: list[Lease]
