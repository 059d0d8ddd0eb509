"""Leader election over the API with a Lease object (client-go's ``leaderelection``).

Several ``cara-server`` replicas share one database; one of them runs the controllers. A
controller running as its own program can elect a leader the same way over HTTP::

    elector = LeaderElector(client, name="my-controller",      # HTTP or in-process client
                            on_started_leading=run_controllers)
    await elector.run()      # campaigns, leads, steps down, campaigns again ... until cancelled

How it works. The Lease ``/api/v1/leases/{name}`` holds ``holderIdentity``,
``leaseDurationSeconds``, ``acquireTime``, ``renewTime`` and ``leaseTransitions``. Every
acquire, renew and release is an update conditioned on the resourceVersion the candidate
read, so of two candidates racing for a free or expired lease exactly one wins (the other
gets 409). Expiry is judged as client-go does, without comparing clocks: a candidate notes
on its own monotonic clock when it last saw the lease *change* (holder, renew time or
resourceVersion) and takes it over only once ``leaseDurationSeconds`` have passed without
a change. The leader renews every ``retry_period``; if it could not renew for
``renew_deadline`` (measured locally from the start of the last successful attempt) it
stops leading — before anyone else may take over, since ``renew_deadline <
lease_duration``. A leader that dies without releasing is replaced within
``lease_duration + retry_period`` of its last renewal; one that stops cleanly releases the
lease (holder cleared) and is replaced within ``retry_period``.

The elector only uses the client's ``leases`` calls (get, create, update): nothing here
talks SQL.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from prometheus_client import Gauge

from caravanserai.api.base import ObjectMeta, utcnow
from caravanserai.api.lease import Lease, LeaseSpec
from caravanserai.api.problems import AlreadyExists, CaravanseraiError, Conflict, NotFound
from caravanserai.client.interface import Client

__all__ = ["LeaderElector", "default_identity"]

log = structlog.get_logger("caravanserai.leader")

IS_LEADER = Gauge("caravanserai_leader_is_leader", "1 while this process leads", ["lease"])

# Failures of one attempt that mean "try again later", not "give up".
_TRANSIENT = (CaravanseraiError, OSError, TimeoutError)


def default_identity() -> str:
    """``hostname-pid-random``: unique per process."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LeaderElector:
    """Campaign for a named lease; run ``on_started_leading`` while holding it.

    Args:
        client: any client of the interface (``CaravanseraiClient`` over HTTP, or the
            server's in-process client); only ``client.leases`` is used.
        on_started_leading: coroutine function run while leading; it is cancelled when
            leadership is lost. If it returns, the lease is released and ``run()``
            returns; if it raises, the lease is released and the campaign resumes.
        on_stopped_leading: called (sync or async) each time leadership ends.
        on_new_leader: called with the holder's identity whenever a different holder is
            observed (including this process).
        name: the lease name; electors with the same name compete.
        identity: this candidate's unique identity (default host-pid-random).
        lease_duration: seconds a lease lasts without renewal (others wait this long).
        renew_deadline: seconds the leader keeps trying to renew before stepping down.
        retry_period: seconds between attempts to acquire or renew.
        release_on_cancel: release the lease when cancelled (fast hand-over).
    """

    def __init__(
        self,
        client: Client,
        *,
        on_started_leading: Callable[[], Coroutine[Any, Any, None]],
        on_stopped_leading: Callable[[], Awaitable[None] | None] | None = None,
        on_new_leader: Callable[[str], Awaitable[None] | None] | None = None,
        name: str = "controller-manager",
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_on_cancel: bool = True,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.client = client
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        # The last lease record seen and when (loop time) it last changed.
        self._observed: tuple[str | None, str | None, str | None] | None = None
        self._observed_at = 0.0
        self._leading = False
        self._last_renew = 0.0
        self.leader: str | None = None
        """The last observed holder's identity (None while unknown or free)."""
        self._log = log.bind(lease=name, identity=self.identity)
        self._gauge = IS_LEADER.labels(name)

    @property
    def is_leader(self) -> bool:
        """True while this process holds the lease and runs ``on_started_leading``."""
        return self._leading

    async def run(self) -> None:
        """Campaign and lead until cancelled (or until ``on_started_leading`` returns)."""
        try:
            while True:
                await self._acquire()
                if await self._lead():
                    return
                await asyncio.sleep(self.retry_period)
        finally:
            self._leading = False

    # -- campaign -------------------------------------------------------------------------

    async def _acquire(self) -> None:
        self._log.info("campaigning for leadership")
        while True:
            try:
                async with asyncio.timeout(self.retry_period * 2):
                    if await self._try_acquire_or_renew():
                        self._last_renew = asyncio.get_running_loop().time()
                        return
            except _TRANSIENT as exc:
                self._log.warning("lease attempt failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self.retry_period)

    async def _lead(self) -> bool:
        """Lead until leadership is lost (False) or the work returned (True)."""
        self._leading = True
        self._gauge.set(1)
        self._log.info("started leading")
        work: asyncio.Task[None] = asyncio.create_task(
            self._on_started(), name=f"leader-{self.name}"
        )
        released = False
        try:
            while True:
                await asyncio.wait({work}, timeout=self.retry_period)
                if work.done():
                    exc = None if work.cancelled() else work.exception()
                    if exc is not None:
                        self._log.error("leader work failed", error=str(exc), exc_info=exc)
                    await self._release()
                    released = True
                    return exc is None and not work.cancelled()
                if not await self._renew():
                    self._log.warning(
                        "lost leadership: could not renew in time",
                        renew_deadline=self.renew_deadline,
                    )
                    return False
        except asyncio.CancelledError:
            if self.release_on_cancel and not released:
                await self._stop_work(work)
                await self._release()
            raise
        finally:
            await self._stop_work(work)
            self._leading = False
            self._gauge.set(0)
            self._log.info("stopped leading")
            if self._on_stopped is not None:
                try:
                    result = self._on_stopped()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self._log.exception("on_stopped_leading failed")

    async def _stop_work(self, work: asyncio.Task[None]) -> None:
        if not work.done():
            work.cancel()
            await asyncio.wait({work})

    async def _renew(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = self._last_renew + self.renew_deadline
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            started = loop.time()
            try:
                async with asyncio.timeout(remaining):
                    ok = await self._try_acquire_or_renew()
            except TimeoutError:
                return False
            except _TRANSIENT as exc:
                self._log.warning("lease renewal failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(min(self.retry_period, max(0.0, deadline - loop.time())))
                continue
            if ok:
                self._last_renew = started
                return True
            return False  # someone else holds it: our lease had expired

    # -- the Lease object -----------------------------------------------------------------

    def _fresh(self) -> Lease:
        stamp = utcnow()
        return Lease(
            metadata=ObjectMeta(name=self.name),
            spec=LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self.lease_duration,
                acquire_time=stamp,
                renew_time=stamp,
                lease_transitions=0,
            ),
        )

    def _note(self, lease: Lease, now: float) -> None:
        """Remember when (on our clock) the lease last changed."""
        spec = lease.spec
        record = (
            spec.holder_identity,
            spec.renew_time.isoformat() if spec.renew_time else None,
            lease.metadata.resource_version,
        )
        if record != self._observed:
            self._observed = record
            self._observed_at = now

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt: True when this candidate holds the lease afterwards."""
        leases = self.client.leases
        now = asyncio.get_running_loop().time()
        try:
            lease = await leases.get(self.name)
        except NotFound:
            try:
                created = await leases.create(self._fresh())
            except AlreadyExists:
                return False
            self._note(created, now)
            await self._observe(self.identity)
            return True
        self._note(lease, now)
        spec = lease.spec
        holder = spec.holder_identity
        duration = spec.lease_duration_seconds or self.lease_duration
        if holder and holder != self.identity and now < self._observed_at + duration:
            await self._observe(holder)
            return False  # held by someone else, not expired
        stamp = utcnow()
        ours = holder == self.identity
        new_spec = spec.model_copy(
            update={
                "holder_identity": self.identity,
                "lease_duration_seconds": self.lease_duration,
                "renew_time": stamp,
                "acquire_time": spec.acquire_time if ours else stamp,
                "lease_transitions": spec.lease_transitions + (0 if ours else 1),
            }
        )
        try:
            updated = await leases.update(lease.model_copy(update={"spec": new_spec}))
        except (Conflict, NotFound):
            return False  # someone else wrote it first: look again next time
        self._note(updated, now)
        await self._observe(self.identity)
        return True

    async def _observe(self, holder: str | None) -> None:
        if holder == self.leader:
            return
        self.leader = holder
        if holder is not None:
            self._log.info("leader observed", leader=holder)
            if self._on_new_leader is not None:
                try:
                    result = self._on_new_leader(holder)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self._log.exception("on_new_leader failed")

    async def _release(self) -> None:
        """Give the lease up so another candidate takes over at its next attempt."""
        try:
            async with asyncio.timeout(self.retry_period):
                lease = await self.client.leases.get(self.name)
                if lease.spec.holder_identity != self.identity:
                    return
                spec = lease.spec.model_copy(
                    update={"holder_identity": None, "renew_time": utcnow()}
                )
                await self.client.leases.update(lease.model_copy(update={"spec": spec}))
            self._log.info("released the lease")
        except _TRANSIENT as exc:
            self._log.warning("could not release the lease", error=str(exc))
