"""Batch the scheduler's placements: many workers' decisions, one ``bind`` call.

Each scheduler worker decides a placement and awaits :meth:`BindingBatcher.bind`; the
batcher sends everything decided in the same event-loop turn — and everything decided while
earlier batches were on their way — as one ``projects.bind`` call (``POST
/api/v1/bindings`` over HTTP, one registry transaction in-process). Every binding keeps its
own resourceVersion precondition and comes back with its own outcome, so a stale one is
retried alone. No timer: a batch closes when the loop has run every worker that was ready,
and at most ``max_in_flight`` batches travel at once, so decisions made meanwhile form the
next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from caravanserai.api.binding import Binding, BindingResult

__all__ = ["BindingBatcher", "Binds"]


class Binds(Protocol):
    """What the batcher needs of a client: ``client.projects``."""

    async def bind(self, bindings: Sequence[Binding]) -> list[BindingResult]: ...


class BindingBatcher:
    """Coalesces concurrent :meth:`bind` calls into batched ``bind`` requests."""

    def __init__(self, projects: Binds, *, max_batch: int = 500, max_in_flight: int = 2) -> None:
        self._projects = projects
        self.max_batch = max_batch
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: list[tuple[Binding, asyncio.Future[BindingResult]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self.batches = 0
        """How many bind requests were sent (for tests and logs)."""

    async def bind(self, binding: Binding) -> BindingResult:
        """Queue ``binding`` for the next batch and wait for its own outcome."""
        future: asyncio.Future[BindingResult] = asyncio.get_running_loop().create_future()
        self._pending.append((binding, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="scheduler-binder")
        return await future

    async def _flush(self) -> None:
        while self._pending:
            await self._slots.acquire()
            # Let every worker that is ready to run this turn add its decision first.
            await asyncio.sleep(0)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            task = asyncio.create_task(self._send(batch), name="scheduler-bind")
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, batch: list[tuple[Binding, asyncio.Future[BindingResult]]]) -> None:
        try:
            self.batches += 1
            results = await self._projects.bind([b for b, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(
                        "binding was cancelled"))
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._slots.release()

    async def close(self) -> None:
        """Cancel batches still on their way (their workers see an error)."""
        tasks = [t for t in (self._flusher, *self._sends) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending.clear()
