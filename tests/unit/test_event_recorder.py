"""EventRecorder: reporting never blocks or raises, identical occurrences aggregate, the
queue is bounded (drops are counted), transient failures are retried with backoff on the
fake clock, refusals are dropped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from caravanserai.api.event import Event, EventKind, aggregation_key, event_name, new_event
from caravanserai.api.problems import Invalid
from caravanserai.client.errors import ServerUnreachable
from caravanserai.informer.backoff import Backoff
from caravanserai.informer.clock import FakeClock
from caravanserai.informer.recorder import EventRecorder, is_transient

T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


class FakeEvents:
    """``client.events`` recording what was written; ``gate`` holds writes until set;
    ``failures`` are raised by the next writes, in order."""

    def __init__(self) -> None:
        self.written: list[Event] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures: list[BaseException] = []
        self.calls = 0

    async def record(self, event: Event) -> Event:
        self.calls += 1
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.written.append(event)
        return event


class FakeClient:
    def __init__(self) -> None:
        self.events = FakeEvents()


def dropped_metric() -> float:
    value = REGISTRY.get_sample_value(
        "caravanserai_events_dropped_total", {"component": "scheduler"}
    )
    return value or 0.0


def recorder(client: FakeClient, clock: FakeClock, **kw: Any) -> EventRecorder:
    kw.setdefault("backoff", Backoff(1.0, 8.0, jitter=0.0))
    return EventRecorder(client, "scheduler", "r1", clock=clock, **kw)  # type: ignore[arg-type]


def test_the_name_is_derived_from_the_aggregation_key() -> None:
    a = new_event("Project", "web", "BackOff", "back-off 10s", now=T0)
    b = new_event("Project", "web", "BackOff", "back-off 10s", now=T0.replace(hour=9))
    c = new_event("Project", "web", "BackOff", "back-off 20s", now=T0)
    assert a.metadata.name == b.metadata.name == event_name(a)
    assert a.metadata.name.startswith("web.")
    assert a.metadata.name != c.metadata.name
    assert aggregation_key(a) != aggregation_key(c)


async def test_identical_occurrences_queued_meanwhile_become_one_write() -> None:
    client, clock = FakeClient(), FakeClock(T0)
    rec = recorder(client, clock, write_timeout=3600)
    client.events.gate.clear()  # the first write hangs: everything else stays queued
    rec.warning("Project", "web", "BackOff", "restarting api")
    await clock.settle()
    for _ in range(5):
        await clock.advance(10)
        rec.warning("Project", "web", "BackOff", "restarting api")
    rec.normal("Project", "web", "Started", "started api")
    client.events.gate.set()
    async with asyncio.timeout(5):  # a guard against a hang, not a timing assertion
        assert await rec.flush()
    counts = [(e.reason, e.count) for e in client.events.written]
    assert counts == [("BackOff", 1), ("BackOff", 5), ("Started", 1)]
    merged = client.events.written[1]
    assert merged.first_timestamp is not None and merged.last_timestamp is not None
    assert (merged.last_timestamp - merged.first_timestamp).total_seconds() == 40
    assert rec.recorded == 7 and rec.written == 3 and rec.dropped == 0
    await rec.aclose()


async def test_reporting_never_blocks_and_a_full_queue_drops_with_a_count() -> None:
    client, clock = FakeClient(), FakeClock(T0)
    rec = recorder(client, clock, max_pending=3)
    before = dropped_metric()
    client.events.gate.clear()  # the server never answers
    for i in range(10):
        rec.normal("Project", f"p{i}", "Created", "created")  # returns at once every time
    await clock.settle()
    # Three accepted (p0 now in flight, two queued), seven dropped.
    assert rec.dropped == 7
    assert rec.recorded == 3
    assert dropped_metric() - before == 7  # /metrics: caravanserai_events_dropped_total
    await rec.aclose(timeout=0)
    assert rec.dropped == 10  # what was still pending at shutdown is counted too
    rec.normal("Project", "late", "Created", "created")  # after close: dropped, no raise
    assert rec.dropped == 11


async def test_transient_failures_are_retried_with_backoff() -> None:
    client, clock = FakeClient(), FakeClock(T0)
    rec = recorder(client, clock)
    client.events.failures = [ServerUnreachable("http://x", "refused")] * 2
    rec.normal("Project", "web", "Scheduled", "assigned web to n1")
    await clock.settle()
    assert client.events.calls == 1 and not client.events.written
    await clock.advance(0.9)
    assert client.events.calls == 1  # first retry after 1 s
    await clock.advance(0.2)
    assert client.events.calls == 2
    await clock.advance(1.8)
    assert client.events.calls == 2  # second retry 2 s after the first (at 3 s)
    await clock.advance(0.2)
    assert [e.reason for e in client.events.written] == ["Scheduled"]
    assert rec.dropped == 0
    await rec.aclose()


async def test_gives_up_after_max_attempts_and_drops_refusals_at_once() -> None:
    client, clock = FakeClient(), FakeClock(T0)
    rec = recorder(client, clock, max_attempts=2)
    client.events.failures = [ServerUnreachable("http://x", "refused")] * 2
    rec.normal("Project", "a", "Created", "created")
    await clock.advance(5)
    assert rec.dropped == 1 and client.events.calls == 2
    client.events.failures = [Invalid("bad event")]
    rec.normal("Project", "b", "Created", "created")
    await clock.advance(0)
    assert rec.dropped == 2 and client.events.calls == 3  # no retry of a refusal
    await rec.aclose()


def test_a_malformed_event_is_dropped_not_raised() -> None:
    rec = recorder(FakeClient(), FakeClock(T0))
    rec.event("Project", "web", EventKind.NORMAL, "not a reason!", "x")
    assert rec.dropped == 1 and rec.recorded == 0


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ServerUnreachable("http://x", "refused"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (Invalid("no"), False),
        (ValueError("bug"), False),
    ],
)
def test_which_failures_are_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
