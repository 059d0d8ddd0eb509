"""The leader Lease as it is stored, for ordering checks on the lease's own timestamps.

Candidates stamp ``acquireTime``/``renewTime`` when they write the Lease (all candidates in
these tests run on one machine, so the stamps share a clock); tests check hand-overs by
comparing those stamps, never the test's clock. No tests here; pytest collects the file and
finds none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from caravanserai.api.lease import Lease


@dataclass(frozen=True)
class LeaseRow:
    holder: str | None
    acquired_at: datetime | None
    renewed_at: datetime
    duration: timedelta
    transitions: int

    @property
    def expires_at(self) -> datetime:
        """When another candidate may take the lease unless it is renewed or released."""
        return self.renewed_at + self.duration


async def read_lease(database_url: str, name: str) -> LeaseRow:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT object FROM cara_objects WHERE kind = 'Lease' AND name = %s", (name,)
        )
        row = await cur.fetchone()
    assert row is not None, f"no lease {name!r}"
    spec = Lease.model_validate(row[0]).spec
    assert spec.renew_time is not None and spec.lease_duration_seconds is not None
    return LeaseRow(
        spec.holder_identity,
        spec.acquire_time,
        spec.renew_time,
        timedelta(seconds=spec.lease_duration_seconds),
        spec.lease_transitions,
    )
