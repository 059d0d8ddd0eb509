"""WorkQueue, rate limiters and the controller runner, in virtual time."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from caravanserai.informer import (
    BucketRateLimiter,
    Controller,
    FakeClock,
    ItemExponentialRateLimiter,
    MaxOfRateLimiter,
    Result,
    ShutDown,
    WorkQueue,
    default_controller_rate_limiter,
)


def make_queue(clock: FakeClock | None = None, **kw: object) -> WorkQueue[str]:
    return WorkQueue("test", clock=clock or FakeClock(), **kw)  # type: ignore[arg-type]


async def test_dedup_before_get() -> None:
    q = make_queue()
    for key in ["a", "b", "a", "a", "c", "b"]:
        q.add(key)
    assert len(q) == 3
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]
    assert len(q) == 0


async def test_readd_during_processing_runs_again_after_done() -> None:
    q = make_queue()
    q.add("a")
    key = await q.get()
    q.add("a")
    q.add("a")
    assert len(q) == 0, "a key being processed is not handed out again"
    assert q.processing == {"a"}
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert q.is_idle()


async def test_no_concurrent_processing_of_one_key_with_many_workers() -> None:
    q = make_queue()
    running: dict[str, int] = {}
    max_running: dict[str, int] = {}
    processed: list[str] = []
    rng = random.Random(7)

    async def worker() -> None:
        while True:
            try:
                key = await q.get()
            except ShutDown:
                return
            running[key] = running.get(key, 0) + 1
            max_running[key] = max(max_running.get(key, 0), running[key])
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
                q.add(rng.choice("abc"))  # re-adds while processing, including itself
            running[key] -= 1
            processed.append(key)
            q.done(key)

    async with asyncio.TaskGroup() as tg:
        workers = [tg.create_task(worker()) for _ in range(8)]
        for i in range(300):
            q.add("abc"[i % 3])
            if i % 7 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(q.wait_idle(), 5)
        q.shut_down()
    assert all(w.done() for w in workers)
    assert max_running == {"a": 1, "b": 1, "c": 1}
    assert set(processed) == {"a", "b", "c"}


async def test_key_readded_while_processing_is_processed_after() -> None:
    q = make_queue()
    seen: list[str] = []

    async def worker() -> None:
        while True:
            try:
                key = await q.get()
            except ShutDown:
                return
            seen.append(key)
            if len(seen) == 1:
                q.add(key)  # changed again while we work on it
                await asyncio.sleep(0)
            q.done(key)

    async with asyncio.TaskGroup() as tg:
        for _ in range(3):
            tg.create_task(worker())
        q.add("x")
        await asyncio.wait_for(q.wait_idle(), 5)
        q.shut_down()
    assert seen == ["x", "x"]


async def test_add_after_orders_by_due_time_and_earliest_wins() -> None:
    clock = FakeClock()
    q = make_queue(clock)
    q.add_after("a", 3)
    q.add_after("b", 1)
    q.add_after("c", 2)
    q.add_after("d", 10)
    q.add_after("d", 0.5)  # earlier wins
    q.add_after("b", 5)  # later is ignored
    assert len(q) == 0 and q.delayed == 4
    await clock.advance(0.5)
    assert len(q) == 1
    await clock.advance(3)
    order = [await q.get() for _ in range(4)]
    assert order == ["d", "b", "c", "a"]
    await clock.advance(100)
    assert len(q) == 0, "the replaced timers do not fire"


async def test_add_after_zero_adds_now() -> None:
    q = make_queue()
    q.add_after("a", 0)
    assert len(q) == 1


def test_item_exponential_backoff_doubles_from_5ms_and_caps() -> None:
    rl = ItemExponentialRateLimiter()
    delays = [rl.when("k") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert all(b == min(1000.0, a * 2) for a, b in itertools.pairwise(delays))
    assert delays[-1] == 1000.0
    assert rl.num_requeues("k") == 20
    assert rl.when("other") == 0.005, "per item"
    rl.forget("k")
    assert rl.num_requeues("k") == 0
    assert rl.when("k") == 0.005
    for _ in range(500):
        rl.when("huge")
    assert rl.when("huge") == 1000.0


async def test_overall_token_bucket_rate_limit() -> None:
    clock = FakeClock()
    rl = BucketRateLimiter(qps=10, burst=100, clock=clock)
    assert [rl.when(i) for i in range(100)] == [0.0] * 100
    assert rl.when(100) == pytest.approx(0.1)
    assert rl.when(101) == pytest.approx(0.2)
    await clock.advance(1.0)  # 10 tokens back, 2 were already owed
    waits = [rl.when(i) for i in range(10)]
    assert waits[:8] == [0.0] * 8
    assert waits[8] == pytest.approx(0.1)


async def test_default_rate_limiter_is_max_of_item_and_bucket() -> None:
    clock = FakeClock()
    rl = default_controller_rate_limiter(clock)
    assert isinstance(rl, MaxOfRateLimiter)
    assert rl.when("a") == 0.005
    for i in range(150):
        rl.when(f"k{i}")
    # the bucket is exhausted: a fresh key waits for the bucket, not 5 ms
    assert rl.when("fresh") > 1.0


async def test_add_rate_limited_backs_off_and_forget_resets() -> None:
    clock = FakeClock()
    q = make_queue(clock, rate_limiter=ItemExponentialRateLimiter(0.005, 1000))
    for expected in (0.005, 0.01, 0.02, 0.04):
        q.add_rate_limited("k")
        await clock.advance(expected * 0.99)
        assert len(q) == 0
        await clock.advance(expected * 0.02)
        assert await q.get() == "k"
        q.done("k")
    assert q.num_requeues("k") == 4
    q.forget("k")
    assert q.num_requeues("k") == 0
    q.add_rate_limited("k")
    await clock.advance(0.005)
    assert len(q) == 1


async def test_shutdown_wakes_getters_and_ignores_adds() -> None:
    q = make_queue()
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.add_after("later", 5)
    q.shut_down()
    for g in getters:
        with pytest.raises(ShutDown):
            await g
    q.add("x")
    q.add_after("y", 1)
    assert len(q) == 0 and q.delayed == 0
    with pytest.raises(ShutDown):
        await q.get()


async def test_shutdown_with_drain_processes_queued_keys() -> None:
    q = make_queue()
    for k in "abc":
        q.add(k)
    done: list[str] = []

    async def worker() -> None:
        while True:
            try:
                key = await q.get()
            except ShutDown:
                return
            await asyncio.sleep(0)
            done.append(key)
            q.done(key)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(worker())
        await q.shut_down_with_drain()
        q.add("ignored")
    assert done == ["a", "b", "c"]


async def test_cancelled_get_loses_nothing() -> None:
    q = make_queue()
    g = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    g.cancel()
    with pytest.raises(asyncio.CancelledError):
        await g
    q.add("a")
    assert await asyncio.wait_for(q.get(), 1) == "a"


# -- the controller runner -----------------------------------------------------------------


class Scripted:
    """A reconciler whose outcome per call is scripted."""

    def __init__(self, outcomes: dict[str, list[object]]) -> None:
        self.outcomes = outcomes
        self.calls: list[str] = []

    async def reconcile(self, key: str) -> Result | None:
        self.calls.append(key)
        outcome = self.outcomes.get(key, [None]).pop(0) if self.outcomes.get(key) else None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]


async def test_controller_retries_errors_with_backoff_and_requeue_after() -> None:
    clock = FakeClock()
    rec = Scripted(
        {
            "bad": [RuntimeError("boom"), RuntimeError("boom"), None],
            "timer": [Result(requeue_after=30), None],
            "cancel": [asyncio.CancelledError(), None],  # not a shutdown: retried
        }
    )
    ctrl = Controller("t", rec, workers=3, clock=clock)
    task = asyncio.create_task(ctrl.run())
    for k in ("bad", "timer", "cancel"):
        ctrl.enqueue(k)
    await clock.advance(0)
    assert sorted(rec.calls) == ["bad", "cancel", "timer"]
    await clock.advance(0.005)  # first retry of "bad" and "cancel" after 5 ms
    assert rec.calls.count("bad") == 2 and rec.calls.count("cancel") == 2
    await clock.advance(0.01)  # second retry after 10 ms more
    assert rec.calls.count("bad") == 3
    assert ctrl.queue.num_requeues("bad") == 0, "success forgets the backoff"
    assert rec.calls.count("timer") == 1
    await clock.advance(30)
    assert rec.calls.count("timer") == 2
    assert not task.done(), "workers survive errors and stray CancelledErrors"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctrl.queue.shutting_down


async def test_controller_cancellation_stops_in_flight_reconcile() -> None:
    started = asyncio.Event()

    async def slow(key: str) -> Result:
        started.set()
        await asyncio.sleep(3600)
        return Result()

    ctrl: Controller[str] = Controller("slow", slow, workers=2)
    task = asyncio.create_task(ctrl.run())
    ctrl.enqueue("a")
    await asyncio.wait_for(started.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)
