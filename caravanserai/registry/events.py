"""Events: the write policy of the Event kind (what happened to an object, and why).

Events live in ``cara_objects`` like every kind, so lists, watches (``?watch=1``), field
selectors (``involvedObject.name``, ``involvedObject.kind``) and the event log come for
free. :meth:`EventRegistry.record` is the write every reporter uses: an upsert keyed by the
event's name, which :func:`caravanserai.api.event.event_name` derives from the aggregation
key, so the first occurrence creates the object and every later one adds its ``count`` and
moves ``lastTimestamp`` in one conditional update (two reporters racing both count).
"""

from __future__ import annotations

from datetime import datetime

from caravanserai.api.base import utcnow
from caravanserai.api.event import Event, EventMeta, aggregation_key
from caravanserai.api.problems import AlreadyExists, Conflict, FieldError, Invalid, NotFound
from caravanserai.api.validation import is_hostname, validate_labels_and_annotations
from caravanserai.registry.base import KindRegistry, timestamp
from caravanserai.store.types import Mutator, Obj

# A create that loses to a concurrent delete (the TTL controller) and an update that loses
# to a concurrent create cannot alternate for ever; three rounds settle any real race.
_ROUNDS = 3


class EventRegistry(KindRegistry[Event]):
    model = Event
    kind = "Event"
    noun = "event"

    async def record(self, event: Event, *, now: datetime | None = None) -> tuple[Event, bool]:
        """Create the event, or aggregate it into the stored one of the same name.

        Aggregating adds ``event.count`` to the stored count, keeps the earliest
        ``firstTimestamp`` and the latest ``lastTimestamp`` (absent timestamps are the
        server's ``now``). Returns the stored event and whether it was created. Conflict
        (409) when the stored object of that name is a different event.
        """
        _validate(event)
        now = now or utcnow()
        first = event.first_timestamp or event.last_timestamp or now
        last = event.last_timestamp or first
        fresh = event.model_copy(
            update={
                "metadata": EventMeta(
                    name=event.metadata.name,
                    labels=dict(event.metadata.labels),
                    annotations=dict(event.metadata.annotations),
                ),
                "first_timestamp": min(first, last),
                "last_timestamp": max(first, last),
            }
        )
        for _ in range(_ROUNDS):
            try:
                return await self._create(self.encode(fresh)), True
            except AlreadyExists:
                pass
            try:
                return self.decode(await self._update(fresh.metadata.name, _bump(fresh))), False
            except NotFound:
                continue  # deleted (expired) in between: create it again
        raise Conflict(f'event "{event.metadata.name}" is being written concurrently; retry')

    async def delete(self, name: str, *, resource_version: str | None = None) -> None:
        """Remove the event (resourceVersion precondition when given)."""
        try:
            old = await self.store.delete(self.kind, name, resource_version=resource_version)
        except NotFound:
            raise self.not_found(name) from None
        self.observed(old)


def _bump(event: Event) -> Mutator:
    """The mutator adding ``event``'s occurrences to the stored event."""
    key = aggregation_key(event)
    first, last = event.first_timestamp, event.last_timestamp

    def mutate(current: Obj) -> Obj:
        stored = Event.model_validate(current)
        if aggregation_key(stored) != key:
            raise Conflict(
                f'event "{event.metadata.name}" exists and records a different occurrence'
            )
        current["count"] = min(stored.count + event.count, 2**31 - 1)
        if first is not None and (stored.first_timestamp is None or first < stored.first_timestamp):
            current["firstTimestamp"] = timestamp(first)
        if last is not None and (stored.last_timestamp is None or last > stored.last_timestamp):
            current["lastTimestamp"] = timestamp(last)
        return current

    return mutate


def _validate(event: Event) -> None:
    errors: list[FieldError] = validate_labels_and_annotations(
        event.metadata.labels, event.metadata.annotations
    )
    if not is_hostname(event.metadata.name):
        errors.append(
            FieldError(
                field="metadata.name",
                message="must be lowercase alphanumerics, '-' and '.', at most 253 characters",
            )
        )
    if errors:
        raise Invalid(f'Event "{event.metadata.name}" is invalid', errors)
