"""EventRecorder: how every component reports Events (client-go's ``tools/record``).

One recorder per component (the scheduler, an agent, the server) over any
:class:`~caravanserai.client.interface.Client` — the in-process client inside cara-server,
the HTTP client in an agent::

    recorder = EventRecorder(client, component="scheduler", clock=ctx.clock)
    recorder.normal("Project", "web", "Scheduled", "Successfully assigned web to n1")
    recorder.warning("Project", "web", "BackOff", "Back-off 20s restarting failed service api")

Reporting never blocks and never raises: :meth:`EventRecorder.event` puts the occurrence
in a bounded in-memory queue and returns; a background task (started on first use, in the
caller's event loop) writes it with ``client.events.record``. So an event can never slow
down or fail the action it describes. What it costs instead:

* **Aggregation on both sides.** Occurrences with the same aggregation key (involved object,
  type, reason, message, source: :func:`caravanserai.api.event.aggregation_key`) that are
  still queued are merged into one pending write whose ``count`` grows; the server adds
  that count to the stored event of the same (derived) name. A crash loop is one object.
* **Bounded memory.** At most ``max_pending`` distinct pending events; a new one beyond
  that is dropped and counted (``dropped``, and the Prometheus counter
  ``caravanserai_events_dropped_total{component}``), with a warning logged for the first and
  then every 100th drop.
* **Retries.** A transient failure (server unreachable, timeout, 5xx, 429) is retried with
  exponential backoff (0.5 s doubling to 30 s, on the injected clock) up to
  ``max_attempts``; a refusal (4xx: invalid, forbidden) is logged and dropped at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import OrderedDict
from typing import Any

import structlog
from prometheus_client import Counter

from caravanserai.api.event import Event, EventKind, aggregation_key, new_event
from caravanserai.api.problems import CaravanseraiError
from caravanserai.client.interface import Client
from caravanserai.informer.backoff import Backoff
from caravanserai.informer.clock import Clock, RealClock

__all__ = ["EventRecorder", "is_transient"]

RECORDED = Counter(
    "caravanserai_events_recorded_total",
    "Event occurrences accepted by recorders (queued or merged into a queued one)",
    ["component"],
)
WRITTEN = Counter(
    "caravanserai_events_written_total", "Event writes that reached the server", ["component"]
)
DROPPED = Counter(
    "caravanserai_events_dropped_total",
    "Event occurrences lost: queue full, refused by the server, out of attempts, shutdown",
    ["component"],
)

DEFAULT_MAX_PENDING = 1000
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_WRITE_TIMEOUT = 10.0


def is_transient(exc: BaseException) -> bool:
    """Whether a failed write is worth retrying: the server was unreachable or busy (no
    answer, a timeout, 5xx or 429), not a refusal of the event itself (4xx)."""
    if isinstance(exc, CaravanseraiError):
        return exc.status >= 500 or exc.status == 429
    return isinstance(exc, OSError | TimeoutError)


class EventRecorder:
    """Queue, aggregate and write Events for one component (see the module docstring).

    Args:
        client: the client the events are written with (``client.events.record``).
        component: ``reportingComponent`` of every event (``scheduler``, ``cara-agent``…).
        instance: ``reportingInstance`` (the node's or replica's name).
        clock: the time source (event timestamps, retry backoff).
        max_pending: the bound on distinct queued events (beyond it, new ones are dropped).
        max_attempts: writes tried per event before it is dropped.
        write_timeout: seconds one write may take (its own bound besides the client's).
    """

    def __init__(
        self,
        client: Client,
        component: str,
        instance: str = "",
        *,
        clock: Clock | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        backoff: Backoff | None = None,
        log: Any = None,
    ) -> None:
        if max_pending < 1 or max_attempts < 1:
            raise ValueError("max_pending and max_attempts must be >= 1")
        self.client = client
        self.component = component
        self.instance = instance
        self.clock: Clock = clock or RealClock()
        self.max_pending = max_pending
        self.max_attempts = max_attempts
        self.write_timeout = write_timeout
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._log = log or structlog.get_logger("caravanserai.events")
        # Pending writes by event name (the aggregation key's digest), oldest first, with
        # the attempts already spent on each.
        self._pending: OrderedDict[str, tuple[Event, int]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.recorded = 0
        """Occurrences accepted (queued or merged into a queued one)."""
        self.written = 0
        """Successful writes to the server."""
        self.dropped = 0
        """Occurrences lost: queue full, refused by the server, or out of attempts."""

    # -- reporting (never blocks, never raises) ---------------------------------------------

    def normal(
        self, kind: str, name: str, reason: str, message: str, uid: str | None = None
    ) -> None:
        """Report a Normal event about object ``kind``/``name``."""
        self.event(kind, name, EventKind.NORMAL, reason, message, uid=uid)

    def warning(
        self, kind: str, name: str, reason: str, message: str, uid: str | None = None
    ) -> None:
        """Report a Warning event about object ``kind``/``name``."""
        self.event(kind, name, EventKind.WARNING, reason, message, uid=uid)

    def event(
        self,
        kind: str,
        name: str,
        type_: EventKind,
        reason: str,
        message: str,
        *,
        uid: str | None = None,
    ) -> None:
        """Queue one occurrence; returns at once. Bad arguments are logged, not raised."""
        if self._closed:
            self._drop("closed", kind, name, reason)
            return
        try:
            event = new_event(
                kind, name, reason, message, type_=type_, uid=uid,
                component=self.component, instance=self.instance, now=self.clock.now(),
            )
        except ValueError as exc:  # pydantic's ValidationError: e.g. a malformed reason
            self._log.warning("event.invalid", kind=kind, name=name, reason=reason, error=str(exc))
            self.dropped += 1
            DROPPED.labels(self.component).inc()
            return
        if self._enqueue(event, attempts=0):
            self.recorded += 1
            RECORDED.labels(self.component).inc()
            self._kick()

    # -- lifecycle ---------------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until nothing is queued (True) or ``timeout`` passes (False)."""
        if timeout is not None and timeout <= 0:
            return self._idle.is_set()
        try:
            async with self.clock.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float | None = 5.0) -> None:  # noqa: ASYNC109
        """Stop accepting events, write what is queued for up to ``timeout`` s, then stop
        (whatever is left is dropped and counted)."""
        self._closed = True
        await self.flush(timeout)
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for event, _ in self._pending.values():
            self._drop("shutdown", event.involved_object.kind, event.involved_object.name,
                       event.reason, event.count)
        self._pending.clear()
        self._idle.set()

    # -- internals ---------------------------------------------------------------------------

    def _enqueue(self, event: Event, attempts: int) -> bool:
        name = event.metadata.name
        queued = self._pending.get(name)
        if queued is not None and aggregation_key(queued[0]) == aggregation_key(event):
            merged, spent = queued
            self._pending[name] = (_merge(merged, event), max(spent, attempts))
            return True
        if len(self._pending) >= self.max_pending:
            obj = event.involved_object
            self._drop("queue full", obj.kind, obj.name, event.reason, event.count)
            return False
        self._pending[name] = (event, attempts)
        self._idle.clear()
        return True

    def _kick(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a loop: the next call from one will write it
            return
        # A fresh context: the drain task must not inherit the caller's (a request's
        # dry-run flag, a tracing span) — it writes for every later caller too.
        self._task = loop.create_task(
            self._drain(), name=f"event-recorder-{self.component}", context=contextvars.Context()
        )

    async def _drain(self) -> None:
        while self._pending:
            name, (event, attempts) = self._pending.popitem(last=False)
            try:
                async with self.clock.timeout(self.write_timeout):
                    await self.client.events.record(event)
            except asyncio.CancelledError:
                self._pending[name] = (event, attempts)  # counted as dropped by aclose
                self._pending.move_to_end(name, last=False)
                raise
            except Exception as exc:
                obj = event.involved_object
                if not is_transient(exc) or attempts + 1 >= self.max_attempts:
                    self._drop(
                        f"write failed: {exc}", obj.kind, obj.name, event.reason, event.count
                    )
                    continue
                delay = self._backoff.next()
                self._log.info(
                    "event.retry", kind=obj.kind, name=obj.name, reason=event.reason,
                    attempt=attempts + 1, delay=round(delay, 2), error=str(exc),
                )
                self._enqueue(event, attempts + 1)
                await self.clock.sleep(delay)
                continue
            self._backoff.reset()
            self.written += 1
            WRITTEN.labels(self.component).inc()
        self._idle.set()

    def _drop(self, why: str, kind: str, name: str, reason: str, count: int = 1) -> None:
        before = self.dropped
        self.dropped += count
        DROPPED.labels(self.component).inc(count)
        # The first drop and then one in a hundred: a full queue must not flood the log.
        if before == 0 or before // 100 != self.dropped // 100:
            self._log.warning(
                "event.dropped", kind=kind, name=name, reason=reason, why=why,
                dropped_total=self.dropped,
            )


def _merge(queued: Event, new: Event) -> Event:
    """One pending write carrying both occurrences."""
    first = min(t for t in (queued.first_timestamp, new.first_timestamp) if t is not None)
    last = max(t for t in (queued.last_timestamp, new.last_timestamp) if t is not None)
    return queued.model_copy(
        update={
            "count": queued.count + new.count,
            "first_timestamp": first,
            "last_timestamp": last,
        }
    )
