"""The leader lease as the database records it, for ordering checks on the DB's clock.

Leader election decides on PostgreSQL's clock (``renewed_at + lease_seconds < now()``), so
tests check hand-overs by comparing the lease row's timestamps, never the test's clock.
No tests here; pytest collects the file and finds none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg


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
            "SELECT holder, acquired_at, renewed_at, lease_seconds, transitions "
            "FROM cara_leases WHERE name = %s", (name,),
        )
        row = await cur.fetchone()
    assert row is not None, f"no lease {name!r}"
    return LeaseRow(row[0], row[1], row[2], timedelta(seconds=row[3]), int(row[4]))
