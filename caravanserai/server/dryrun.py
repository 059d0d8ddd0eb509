"""``?dryRun=All`` on any write, as Kubernetes has: every check runs, nothing is stored.

The request takes the ordinary road — body limits, parsing, validation, the handler's
admission rules (a Terminating project refuses a new spec, a resourceVersion precondition,
a node with projects refuses deletion), the mutation that computes the new object — and only
the store's write is left out. That is done at the boundary, not in each handler: the
middleware marks the request's context, and the store the handlers use
(:class:`DryRunStore`, wrapping the real one) answers a marked create/update/delete with the
object it would have stored (same status code, same body) without writing, so no revision
and no event. Reads and watches are untouched.
"""

from __future__ import annotations

import contextvars
import copy
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter

from caravanserai.api import AlreadyExists, BadRequest, NotFound
from caravanserai.api.base import Timestamp, utcnow
from caravanserai.store.node_leases import NodeLeases
from caravanserai.store.postgres import PostgresStore, _check_version
from caravanserai.store.types import Mutator, Obj, Store

# Kubernetes' value is "All"; "true" reads naturally in a URL too.
_VALUES = {"all", "true"}
_DRY_RUN: contextvars.ContextVar[bool] = contextvars.ContextVar("cara_dry_run", default=False)
_TIMESTAMP: TypeAdapter[Any] = TypeAdapter(Timestamp)


def is_dry_run() -> bool:
    """Whether the write being handled is a dry run."""
    return _DRY_RUN.get()


@web.middleware
async def dry_run_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    value = request.query.get("dryRun")
    if value is None:
        return await handler(request)
    if value.lower() not in _VALUES:
        raise BadRequest(f"dryRun={value!r}: the only value is All")
    token = _DRY_RUN.set(request.method not in ("GET", "HEAD", "OPTIONS"))
    try:
        response = await handler(request)
    finally:
        _DRY_RUN.reset(token)
    return response


class DryRunStore:
    """The real store, except that writes in a dry-run request are computed, not made."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def create(self, obj: Obj) -> Obj:
        if not is_dry_run():
            return await self._store.create(obj)
        new = copy.deepcopy(obj)
        md = new.setdefault("metadata", {})
        kind, name = new.get("kind"), md.get("name")
        if not isinstance(kind, str) or not isinstance(name, str) or not name:
            raise BadRequest("object needs kind and metadata.name")
        try:
            await self._store.get(kind, name)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"{kind} {name!r} already exists")
        for server_managed in ("resourceVersion", "deletionTimestamp"):
            md.pop(server_managed, None)
        # What the store would set (the uid is a fresh one, as Kubernetes' dry run does).
        md["uid"] = str(uuid.uuid4())
        md["generation"] = 1
        md["creationTimestamp"] = _TIMESTAMP.dump_python(utcnow(), mode="json")
        return new

    async def update(
        self, kind: str, name: str, mutate: Mutator, *, resource_version: str | None = None
    ) -> Obj:
        if not is_dry_run():
            return await self._store.update(
                kind, name, mutate, resource_version=resource_version
            )
        current = copy.deepcopy(await self._store.get(kind, name))
        # The store's own rules (version check, immutable metadata, generation).
        result = PostgresStore._apply(kind, name, current, mutate, resource_version)
        return current if result is None else result[0]

    async def delete(
        self,
        kind: str,
        name: str,
        *,
        resource_version: str | None = None,
        precondition: Callable[[Obj], None] | None = None,
    ) -> Obj:
        if not is_dry_run():
            return await self._store.delete(
                kind, name, resource_version=resource_version, precondition=precondition
            )
        current = copy.deepcopy(await self._store.get(kind, name))
        _check_version(kind, name, current.get("metadata") or {}, resource_version)
        if precondition is not None:
            precondition(copy.deepcopy(current))
        return current


class DryRunNodeLeases:
    """The node heartbeat store, except that a dry-run heartbeat or node delete leaves the
    lease as it is (the heartbeat still reads the node, so a missing one is still a 404)."""

    def __init__(self, leases: NodeLeases) -> None:
        self._leases = leases

    async def renew(self, name: str, now: datetime, *, write: bool = True) -> Obj:
        return await self._leases.renew(name, now, write=write and not is_dry_run())

    async def renewed_at(self, name: str) -> datetime | None:
        return await self._leases.renewed_at(name)

    async def forget(self, name: str) -> None:
        if not is_dry_run():
            await self._leases.forget(name)
