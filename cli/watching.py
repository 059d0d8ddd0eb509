"""Following changes: ``get -w`` and the ``--wait`` flags, over the informer's Reflector.

The Reflector (``caravanserai.informer``) owns resumption: a broken stream (server restart)
is resumed from the last revision seen with jittered backoff, a ``410 Gone`` relists and
reports only the difference. We seed its cache with the list we already printed, so its own
first list yields exactly what changed in between, nothing twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from caravanserai.api import EventType
from caravanserai.client.http import ListOptions, ObjectList, ResourceClient
from caravanserai.informer.cache import Cache, Delta, DeltaType
from caravanserai.informer.listerwatcher import HTTPListerWatcher
from caravanserai.informer.reflector import Reflector

# The API's event names for what the cache saw, as ``--output-watch-events`` prints them.
EVENT_NAMES = {
    DeltaType.ADDED: EventType.ADDED.value,
    DeltaType.UPDATED: EventType.MODIFIED.value,
    DeltaType.DELETED: EventType.DELETED.value,
    DeltaType.SYNC: EventType.MODIFIED.value,
}


@asynccontextmanager
async def reflect(
    resources: ResourceClient[Any],
    options: ListOptions,
    seed: ObjectList[Any] | None = None,
    *,
    indexers: dict[str, Callable[[Any], list[str]]] | None = None,
    deltas: bool = True,
) -> AsyncIterator[tuple[Cache[Any], asyncio.Queue[list[Delta[Any]]]]]:
    """Run a reflector in the background; yield its cache and a queue of delta batches
    (left empty with ``deltas=False``, for a cache that is only read)."""
    cache: Cache[Any] = Cache(indexers)
    if seed is not None:
        cache.replace(seed.items, seed.resource_version)
    queue: asyncio.Queue[list[Delta[Any]]] = asyncio.Queue()
    reflector: Reflector[Any] = Reflector(
        HTTPListerWatcher(resources, options), cache, on_deltas=queue.put_nowait if deltas else None
    )
    task = asyncio.create_task(reflector.run())
    try:
        yield cache, queue
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def name_options(name: str) -> ListOptions:
    return ListOptions.of(field_selector=f"metadata.name={name}")


async def wait_for(
    resources: ResourceClient[Any],
    name: str,
    done: Callable[[Any | None], bool],
    on_change: Callable[[Any | None], None] | None = None,
) -> Any | None:
    """Block until ``done(obj)`` holds for the object named ``name`` (None: it is gone).

    Returns the object at that moment. ``on_change`` sees every state on the way (progress).
    """
    options = name_options(name)
    seed = await resources.list(options)
    current = seed.items[0] if seed.items else None
    if on_change is not None:
        on_change(current)
    if done(current):
        return current
    async with reflect(resources, options, seed) as (cache, queue):
        while True:
            await queue.get()
            current = cache.get(name)
            if on_change is not None:
                on_change(current)
            if done(current):
                return current
