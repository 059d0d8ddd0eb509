"""Loading and applying ``schema.sql`` (idempotent, safe from several processes at once)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import psycopg
import structlog

log = structlog.get_logger(__name__)

# Any fixed 64-bit key works; it only has to be the same in every process.
SCHEMA_LOCK_KEY = 0x63617261_73636865  # "carasche"


@cache
def schema_sql() -> str:
    """The schema text: next to this module in a wheel, else the repository root."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schema.sql", here.parent.parent / "schema.sql"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise FileNotFoundError("schema.sql not found next to caravanserai/store or at the repo root")


async def apply_schema(conn: psycopg.AsyncConnection[object]) -> None:
    """Apply the schema in one transaction under an advisory lock.

    ``CREATE ... IF NOT EXISTS`` alone is not safe concurrently (two sessions can both pass
    the check and one then fails on a catalog unique index), hence the transaction-scoped
    advisory lock: a second process waits, then finds everything in place.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        await conn.execute(schema_sql().encode())
    log.debug("store.schema_applied")


def apply_schema_sync(conn: psycopg.Connection[object]) -> None:
    """Blocking twin of :func:`apply_schema` for scripts and test fixtures."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        conn.execute(schema_sql().encode())
