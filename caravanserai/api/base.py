"""Shared building blocks of every resource: the wire model base, metadata, conditions."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

API_VERSION: Final = "caravanserai/v1"


def _rfc3339(value: datetime) -> str:
    # One canonical wire form: UTC, second precision unless sub-second matters, trailing Z.
    value = value.astimezone(UTC)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")


Timestamp = Annotated[AwareDatetime, PlainSerializer(_rfc3339, return_type=str, when_used="json")]
"""A timezone-aware datetime, serialised as RFC 3339 in UTC (``2026-04-07T00:00:00Z``)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class WireModel(BaseModel):
    """Base of every model that crosses a wire.

    Python attributes are snake_case, the JSON/YAML form is camelCase (as Kubernetes).
    Unknown fields are rejected: a typo in a manifest must be an error, not silently dropped.
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    def to_wire(self) -> dict[str, object]:
        """The JSON-compatible dict form, without unset optional fields."""
        return self.model_dump(mode="json", exclude_none=True)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(WireModel):
    """Structured detail about why an object is in its current state."""

    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    last_transition_time: Timestamp | None = None
    last_heartbeat_time: Timestamp | None = None


class ObjectMeta(WireModel):
    """Kubernetes-style metadata. Server-managed fields are ignored on create."""

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Timestamp | None = None
    deletion_timestamp: Timestamp | None = None


class ListMeta(WireModel):
    resource_version: str
    # Opaque token for the next page; absent on the last page.
    continue_: str | None = Field(default=None, alias="continue")


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of the given type, or None."""
    for condition in conditions:
        if condition.type == type_:
            return condition
    return None


def set_condition(conditions: list[Condition], new: Condition, now: datetime | None = None) -> bool:
    """Insert or replace the condition of ``new.type`` in place.

    ``lastTransitionTime`` only moves when the status changes (Kubernetes semantics), so it
    tells how long the condition has held. Returns True when anything changed.
    """
    now = now or utcnow()
    for i, old in enumerate(conditions):
        if old.type != new.type:
            continue
        transition = old.last_transition_time if old.status == new.status else None
        merged = new.model_copy(
            update={"last_transition_time": new.last_transition_time or transition or now}
        )
        if merged == old:
            return False
        conditions[i] = merged
        return True
    conditions.append(
        new.model_copy(update={"last_transition_time": new.last_transition_time or now})
    )
    return True


def remove_condition(conditions: list[Condition], type_: str) -> bool:
    """Remove the condition of the given type in place; True when one was removed."""
    before = len(conditions)
    conditions[:] = [c for c in conditions if c.type != type_]
    return len(conditions) != before
