"""PostgreSQL storage: objects, one global revision, the event log and the watch hub.

``PostgresStore`` is imported lazily so ``from caravanserai.store import StoreEvent`` stays
light (no psycopg pool) for code that only needs the types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caravanserai.store.types import ListResult, Mutator, Obj, Store, StoreEvent, Watch

if TYPE_CHECKING:
    from caravanserai.store.postgres import PostgresStore

__all__ = ["ListResult", "Mutator", "Obj", "PostgresStore", "Store", "StoreEvent", "Watch"]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from caravanserai.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
