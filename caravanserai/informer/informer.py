"""SharedInformer: one reflector and one cache shared by any number of event handlers.

::

    informer = SharedInformer(HTTPListerWatcher(client.projects),
                              indexers={"nodeRef": index_by_node_ref})
    informer.add_handler(on_add=lambda p: queue.add(p.metadata.name),
                         on_update=lambda old, new: queue.add(new.metadata.name),
                         on_delete=lambda p: queue.add(p.metadata.name))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(informer.run())
        await informer.wait_for_sync()
        ...
        informer.get("web"); informer.list(); informer.by_index("nodeRef", "node-1")

Each handler has its own unbounded buffer and task, so a slow handler never delays the
others or the reflector; each handler sees the changes of the cache in order. Handlers may
be plain functions or coroutines; an exception in a handler is logged and does not stop
delivery. A handler added after the informer synced first receives ``on_add`` for every
object already in the cache.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from caravanserai.api.event import Event
from caravanserai.api.node import Node
from caravanserai.api.project import Project
from caravanserai.informer.backoff import Backoff
from caravanserai.informer.cache import Cache, Delta, DeltaType, IndexFunc
from caravanserai.informer.clock import Clock, RealClock
from caravanserai.informer.listerwatcher import ListerWatcher
from caravanserai.informer.reflector import Reflector

__all__ = ["HandlerRegistration", "OnAdd", "OnDelete", "OnUpdate", "SharedInformer"]

T = TypeVar("T", bound=Project | Node | Event)

OnAdd = Callable[[T], "Awaitable[None] | None"]
OnUpdate = Callable[[T, T], "Awaitable[None] | None"]
OnDelete = Callable[[T], "Awaitable[None] | None"]

log = structlog.get_logger("caravanserai.informer")


@dataclass(frozen=True)
class _Synced:
    """Marker queued after a handler's initial adds."""


_SYNCED = _Synced()


class HandlerRegistration(Generic[T]):
    """One handler's subscription: its buffer, its task and its own sync state."""

    def __init__(
        self,
        informer: SharedInformer[T],
        on_add: OnAdd[T] | None,
        on_update: OnUpdate[T] | None,
        on_delete: OnDelete[T] | None,
        name: str,
    ) -> None:
        self._informer = informer
        self.on_add = on_add
        self.on_update = on_update
        self.on_delete = on_delete
        self.name = name
        self._queue: asyncio.Queue[Delta[T] | _Synced] = asyncio.Queue()
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = log.bind(kind=informer.kind, handler=name)

    @property
    def has_synced(self) -> bool:
        """True once this handler has processed the initial list."""
        return self._synced.is_set()

    async def wait_for_sync(self) -> None:
        """Wait until this handler has processed every object of the initial list."""
        await self._synced.wait()

    @property
    def pending(self) -> int:
        """Notifications buffered for this handler."""
        return self._queue.qsize()

    def remove(self) -> None:
        """Stop delivering to this handler."""
        self._informer.remove_handler(self)

    def _put(self, item: Delta[T] | _Synced) -> None:
        self._queue.put_nowait(item)

    def _start(self, tg: asyncio.TaskGroup) -> None:
        if self._task is None:
            self._task = tg.create_task(self._run(), name=f"informer-handler-{self.name}")

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Synced):
                self._synced.set()
                continue
            await self._dispatch(item)

    async def _dispatch(self, delta: Delta[T]) -> None:
        result: Awaitable[None] | None = None
        try:
            if delta.type is DeltaType.ADDED:
                if self.on_add is not None:
                    result = self.on_add(delta.new)
            elif delta.type is DeltaType.DELETED:
                if self.on_delete is not None:
                    result = self.on_delete(delta.new)
            elif self.on_update is not None:
                old = delta.old if delta.old is not None else delta.new
                result = self.on_update(old, delta.new)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("event handler failed", change=str(delta.type), name=delta.name)


class SharedInformer(Generic[T]):
    """A cache of one kind of object kept current by a reflector, with event handlers.

    Args:
        lw: the ListerWatcher (HTTP or in-process).
        indexers: named index functions (see :func:`index_by_node_ref`, ...).
        resync_period: if set, every handler's ``on_update(obj, obj)`` is called for every
            cached object this often (a safety net for level-triggered controllers).
        clock: time source.
        backoff, liveness_timeout, min_watch_timeout: passed to the :class:`Reflector`.
    """

    def __init__(
        self,
        lw: ListerWatcher[T],
        *,
        indexers: Mapping[str, IndexFunc[T]] | None = None,
        resync_period: float | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        liveness_timeout: float = 90.0,
        min_watch_timeout: float = 300.0,
    ) -> None:
        self.lw = lw
        self.kind = lw.model.__name__
        self.cache: Cache[T] = Cache(indexers)
        self.clock: Clock = clock or RealClock()
        self.resync_period = resync_period
        self.reflector: Reflector[T] = Reflector(
            lw,
            self.cache,
            on_deltas=self._distribute,
            on_synced=self._mark_synced,
            clock=self.clock,
            backoff=backoff,
            liveness_timeout=liveness_timeout,
            min_watch_timeout=min_watch_timeout,
        )
        self._handlers: builtins.list[HandlerRegistration[T]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._running = False

    # -- handlers -------------------------------------------------------------------------

    def add_handler(
        self,
        on_add: OnAdd[T] | None = None,
        on_update: OnUpdate[T] | None = None,
        on_delete: OnDelete[T] | None = None,
        *,
        name: str | None = None,
    ) -> HandlerRegistration[T]:
        """Subscribe callbacks (sync or async) to this informer's changes.

        ``on_update(old, new)`` also fires on periodic resyncs (then ``old is new``).
        ``on_delete`` receives the object's last known state. May be called before or
        after ``run()``; late handlers first get ``on_add`` for every cached object.
        """
        reg = HandlerRegistration(
            self, on_add, on_update, on_delete, name or f"{self.kind}-{len(self._handlers)}"
        )
        self._handlers.append(reg)
        if self.reflector.synced.is_set():
            for obj in self.cache.list():
                reg._put(Delta(DeltaType.ADDED, None, obj))
            reg._put(_SYNCED)
        if self._tg is not None:
            reg._start(self._tg)
        return reg

    def remove_handler(self, reg: HandlerRegistration[T]) -> None:
        """Unsubscribe a handler (its buffered notifications are dropped)."""
        if reg in self._handlers:
            self._handlers.remove(reg)
            reg._stop()

    def add_indexers(self, indexers: Mapping[str, IndexFunc[T]]) -> None:
        """Register more indexers (allowed at any time; existing objects get indexed)."""
        for name, func in indexers.items():
            self.cache.add_indexer(name, func)

    # -- reads (the lister) ---------------------------------------------------------------

    def get(self, name: str) -> T | None:
        """The cached object called ``name`` (read-only), or None."""
        return self.cache.get(name)

    def list(self) -> builtins.list[T]:
        """Every cached object (read-only)."""
        return self.cache.list()

    def by_index(self, index: str, value: str) -> builtins.list[T]:
        """Cached objects whose indexer ``index`` yields ``value``."""
        return self.cache.by_index(index, value)

    @property
    def resource_version(self) -> str:
        """The revision the cache reflects."""
        return self.cache.resource_version

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        """True once the cache holds the first complete list."""
        return self.reflector.synced.is_set()

    async def wait_for_sync(self) -> None:
        """Wait until the cache holds the first complete list.

        Bound it with ``asyncio.timeout`` if needed; it waits for as long as the server
        cannot be reached (the reflector keeps retrying).
        """
        await self.reflector.synced.wait()

    async def wait_for_handlers(self) -> None:
        """Wait until the cache synced and every handler processed the initial list."""
        await self.reflector.synced.wait()
        for reg in builtins.list(self._handlers):
            await reg.wait_for_sync()

    async def run(self) -> None:
        """Run the reflector, the handlers and the resync timer until cancelled."""
        if self._running:
            raise RuntimeError(f"informer for {self.lw.description} is already running")
        self._running = True
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for reg in self._handlers:
                    reg._start(tg)
                tg.create_task(self.reflector.run(), name=f"reflector-{self.lw.description}")
                if self.resync_period:
                    tg.create_task(self._resync_loop(self.resync_period))
        finally:
            self._tg = None
            self._running = False
            for reg in self._handlers:
                reg._task = None

    async def _resync_loop(self, period: float) -> None:
        await self.reflector.synced.wait()
        while True:
            await self.clock.sleep(period)
            objs = self.cache.list()
            for reg in self._handlers:
                for obj in objs:
                    reg._put(Delta(DeltaType.SYNC, obj, obj))

    def _distribute(self, deltas: builtins.list[Delta[T]]) -> None:
        for reg in self._handlers:
            for delta in deltas:
                reg._put(delta)

    def _mark_synced(self) -> None:
        for reg in self._handlers:
            reg._put(_SYNCED)

