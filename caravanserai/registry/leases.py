"""Leases: the write policy of the Lease kind (leader election's lock).

Leases live in ``cara_objects`` like every kind (see ``schema.sql``), so they get the global
revision, the event log, watch and resourceVersion preconditions for free: an acquire, a
renew and a release are each an update conditioned on the version the candidate read, so
two candidates can never both win.
"""

from __future__ import annotations

from caravanserai.api.base import ObjectMeta
from caravanserai.api.lease import Lease
from caravanserai.api.problems import FieldError, Invalid, NotFound
from caravanserai.api.validation import validate_metadata
from caravanserai.registry.base import KindRegistry


class LeaseRegistry(KindRegistry[Lease]):
    model = Lease
    kind = "Lease"
    noun = "lease"

    async def create(self, lease: Lease) -> Lease:
        """Store a new lease (AlreadyExists when another candidate created it first)."""
        _validate(lease)
        meta = ObjectMeta(
            name=lease.metadata.name,
            labels=dict(lease.metadata.labels),
            annotations=dict(lease.metadata.annotations),
        )
        return await self._create(self.encode(lease.model_copy(update={"metadata": meta})))

    async def update(self, lease: Lease) -> Lease:
        """Replace the spec, labels and annotations; Conflict (409) when
        ``metadata.resourceVersion`` is set and no longer current."""
        _validate(lease)
        return await self._replace_spec_and_metadata(lease)

    async def delete(self, name: str, *, resource_version: str | None = None) -> None:
        """Remove the lease (resourceVersion precondition when given)."""
        try:
            old = await self.store.delete(self.kind, name, resource_version=resource_version)
        except NotFound:
            raise self.not_found(name) from None
        self.observed(old)


def _validate(lease: Lease) -> None:
    errors: list[FieldError] = validate_metadata(lease.metadata)
    if errors:
        raise Invalid(f'Lease "{lease.metadata.name}" is invalid', errors)
