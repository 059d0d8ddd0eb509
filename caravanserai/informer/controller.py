"""The controller runner: informers feed keys to a work queue, N workers reconcile them.

::

    class Labeler:
        async def reconcile(self, key: str) -> Result:
            project = projects.get(key)      # read the cache, never trust the event
            ...
            return Result()                  # or Result(requeue_after=30)

    ctrl = Controller("labeler", Labeler(), workers=2)
    ctrl.watch(projects)                     # enqueue the name of every changed project
    await ctrl.run()                         # until cancelled

Outcomes of ``reconcile(key)``:

- returns ``Result()`` / ``None``: done; the key's backoff is reset;
- ``Result(requeue_after=s)``: processed again in ``s`` seconds (a timer), backoff reset;
- ``Result(requeue=True)``: processed again after the key's rate-limited backoff;
- raises: logged with the key, counted, and retried with the key's backoff
  (5 ms doubling to 1000 s, overall 10/s). A ``CancelledError`` that is not the
  controller's own shutdown (e.g. a leaked inner timeout) is treated as an error too: a
  worker only stops when the controller stops.

A reconciler object that holds something to release (a batcher's requests on their way, a
connection) may define ``async close()``: ``run()`` awaits it once the workers have stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import structlog
from prometheus_client import Counter, Gauge, Histogram

from caravanserai.api.event import Event
from caravanserai.api.node import Node
from caravanserai.api.project import Project
from caravanserai.informer.clock import Clock, RealClock
from caravanserai.informer.informer import HandlerRegistration, SharedInformer
from caravanserai.informer.ratelimit import RateLimiter
from caravanserai.informer.workqueue import ShutDown, WorkQueue

if TYPE_CHECKING:
    from caravanserai.client.http import ListOptions
    from caravanserai.informer.builder import ControllerBuilder, Predicate
    from caravanserai.informer.cache import IndexFunc

__all__ = ["Controller", "Reconciler", "Result"]

T = TypeVar("T", bound=Project | Node | Event)
K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)

log = structlog.get_logger("caravanserai.controller")

RECONCILES = Counter(
    "caravanserai_controller_reconcile_total",
    "Reconciles by outcome (success, requeue, requeue_after, error)",
    ["controller", "result"],
)
RECONCILE_ERRORS = Counter(
    "caravanserai_controller_reconcile_errors_total", "Reconciles that raised", ["controller"]
)
RECONCILE_TIME = Histogram(
    "caravanserai_controller_reconcile_duration_seconds",
    "Time spent in reconcile",
    ["controller"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ACTIVE_WORKERS = Gauge(
    "caravanserai_controller_active_workers", "Workers currently reconciling", ["controller"]
)


@dataclass(frozen=True, slots=True)
class Result:
    """What to do with a key after a successful reconcile.

    Attributes:
        requeue_after: reconcile the key again after this many seconds (a timer, e.g. the
            time until a deadline read from the object).
        requeue: reconcile the key again after its rate-limited backoff.
    """

    requeue_after: float | None = None
    requeue: bool = False


class Reconciler(Protocol[K_contra]):
    """Brings the world in line with the desired state of one key (usually an object name).

    Must be idempotent and level-triggered: read the current state (the informer cache,
    the API), do not rely on what event caused the call. Several keys are reconciled
    concurrently when ``workers > 1``, but never the same key twice at once.
    """

    async def reconcile(self, key: K_contra) -> Result | None:
        """Reconcile ``key``; raise to retry with backoff."""
        ...


class Controller(Generic[K]):
    """Runs a :class:`Reconciler` over a :class:`WorkQueue` with ``workers`` workers.

    Args:
        name: the controller's name (metrics label, logs, queue name).
        reconciler: an object with ``async reconcile(key) -> Result | None``, or such a
            coroutine function.
        workers: concurrent reconciles (of different keys).
        clock: time source for delays.
        rate_limiter: the queue's rate limiter (default per-key 5 ms → 1000 s, 10 qps).
        reconcile_timeout: if set, a reconcile running longer is cancelled and retried.
        kind: the kind of the keys, for logs (``Project``, ``Node``).

    A ``reconciler`` object with an ``async close()`` method has it awaited when ``run()``
    ends, after the workers stopped.
    """

    def __init__(
        self,
        name: str,
        reconciler: Reconciler[K] | Callable[[K], Awaitable[Result | None]],
        *,
        workers: int = 1,
        clock: Clock | None = None,
        rate_limiter: RateLimiter | None = None,
        reconcile_timeout: float | None = None,
        kind: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.name = name
        self._reconcile: Callable[[K], Awaitable[Result | None]] = (
            reconciler.reconcile if hasattr(reconciler, "reconcile") else reconciler
        )
        close = getattr(reconciler, "close", None) if hasattr(reconciler, "reconcile") else None
        self._close: Callable[[], Awaitable[None]] | None = close
        self.workers = workers
        self.clock: Clock = clock or RealClock()
        self.queue: WorkQueue[K] = WorkQueue(name, clock=self.clock, rate_limiter=rate_limiter)
        self.reconcile_timeout = reconcile_timeout
        self._informers: list[SharedInformer[Any]] = []
        self._registrations: list[HandlerRegistration[Any]] = []
        self._log = log.bind(controller=name, kind=kind)
        self._stopping = False
        self._metrics = (
            RECONCILES.labels(name, "success"),
            RECONCILES.labels(name, "requeue"),
            RECONCILES.labels(name, "requeue_after"),
            RECONCILES.labels(name, "error"),
            RECONCILE_ERRORS.labels(name),
            RECONCILE_TIME.labels(name),
            ACTIVE_WORKERS.labels(name),
        )

    @staticmethod
    def for_(
        model: type[T],
        options: ListOptions | None = None,
        *,
        indexers: Mapping[str, IndexFunc[T]] | None = None,
        predicate: Predicate | None = None,
    ) -> ControllerBuilder[T]:
        """Start a :class:`~caravanserai.informer.builder.ControllerBuilder` reconciling
        objects of ``model`` (see ``docs/controllers.md``, quick start)."""
        from caravanserai.informer.builder import ControllerBuilder

        return ControllerBuilder.for_(model, options, indexers=indexers, predicate=predicate)

    # -- wiring ---------------------------------------------------------------------------

    def watch(
        self,
        informer: SharedInformer[T],
        keys: Callable[[T], Iterable[K]] | None = None,
        *,
        predicate: Callable[[T | None, T], bool] | None = None,
    ) -> None:
        """Enqueue keys for every add, update (including resync) and delete of ``informer``.

        Args:
            keys: maps a changed object to the keys to reconcile (default: its name). E.g.
                a scheduler watching nodes returns the names of Pending projects.
            predicate: ``(old, new) -> bool`` filter; ``old`` is None on add and delete.
        ``run()`` waits for every watched informer to sync before reconciling.
        """

        def enqueue(old: T | None, new: T) -> None:
            if predicate is not None and not predicate(old, new):
                return
            if keys is None:
                self.queue.add(new.metadata.name)  # type: ignore[arg-type]
            else:
                for key in keys(new):
                    self.queue.add(key)

        registration = informer.add_handler(
            on_add=lambda obj: enqueue(None, obj),
            on_update=enqueue,
            on_delete=lambda obj: enqueue(None, obj),
            name=f"{self.name}/{informer.kind}",
        )
        self.wait_for(informer)
        self.wait_for_handler(registration)

    def wait_for(self, informer: SharedInformer[Any]) -> None:
        """Make ``run()`` wait for ``informer``'s cache to sync before the first reconcile."""
        if informer not in self._informers:
            self._informers.append(informer)

    def wait_for_handler(self, registration: HandlerRegistration[Any]) -> None:
        """Make ``run()`` wait until ``registration``'s handler has processed the initial
        list before the first reconcile (so state a handler keeps for the reconciler, and
        the keys it enqueues for the initial objects, are complete)."""
        if registration not in self._registrations:
            self._registrations.append(registration)

    @property
    def registrations(self) -> list[HandlerRegistration[Any]]:
        """The handlers feeding this controller (``watch`` and the builder register them):
        ``pending`` says how many events each still has to deliver."""
        return list(self._registrations)

    def enqueue(self, key: K) -> None:
        """Reconcile ``key`` soon."""
        self.queue.add(key)

    def enqueue_after(self, key: K, delay: float) -> None:
        """Reconcile ``key`` after ``delay`` seconds."""
        self.queue.add_after(key, delay)

    # -- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """Wait for the informers to sync, then reconcile with N workers until cancelled.

        On cancellation the queue is shut down, workers finish their current reconcile's
        cancellation and the CancelledError propagates.
        """
        try:
            for informer in self._informers:
                await informer.wait_for_sync()
            for registration in self._registrations:
                await registration.wait_for_sync()
            self._log.info("controller started", workers=self.workers)
            try:
                async with asyncio.TaskGroup() as tg:
                    for i in range(self.workers):
                        tg.create_task(self._worker(), name=f"{self.name}-worker-{i}")
            finally:
                self._stopping = True
                self.queue.shut_down()
                self._log.info("controller stopped")
        finally:
            if self._close is not None:
                await self._close()

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: K) -> None:
        """Reconcile one key and requeue it as its outcome says (used by the workers)."""
        ok, requeue, requeue_after, error, errors, latency, active = self._metrics
        start = self.clock.monotonic()
        active.inc()
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        try:
            if self.reconcile_timeout is not None:
                async with self.clock.timeout(self.reconcile_timeout):
                    result = await self._reconcile(key)
            else:
                result = await self._reconcile(key)
        except asyncio.CancelledError:
            if self._stopping or (task is not None and task.cancelling() > cancelling):
                raise  # our own shutdown
            self._failed(key, "reconcile raised CancelledError (not a shutdown)", error, errors)
            return
        except Exception as exc:
            self._failed(key, exc, error, errors)
            return
        finally:
            active.dec()
            latency.observe(max(0.0, self.clock.monotonic() - start))
        if result is not None and result.requeue_after is not None:
            self.queue.forget(key)
            self.queue.add_after(key, result.requeue_after)
            requeue_after.inc()
        elif result is not None and result.requeue:
            self.queue.add_rate_limited(key)
            requeue.inc()
        else:
            self.queue.forget(key)
            ok.inc()

    def _failed(self, key: K, exc: BaseException | str, error: Any, errors: Any) -> None:
        error.inc()
        errors.inc()
        retries = self.queue.num_requeues(key)
        if isinstance(exc, BaseException):
            self._log.error(
                "reconcile failed",
                name=key,
                retries=retries,
                error=str(exc) or type(exc).__name__,
                exc_info=exc,
            )
        else:
            self._log.error("reconcile failed", name=key, retries=retries, error=exc)
        self.queue.add_rate_limited(key)
