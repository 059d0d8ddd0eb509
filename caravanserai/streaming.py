"""Streaming helpers shared by the aiohttp servers of cara-server and cara-agent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web


async def while_client_connected(
    source: AsyncIterator[bytes], request: web.Request, poll: float = 2.0
) -> AsyncIterator[bytes]:
    """``source``'s chunks until it ends or the client goes away.

    A follow stream of a quiet container would otherwise wait for the next line forever
    after its reader left: the read happens in a task, the connection is checked meanwhile.
    """
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=16)

    async def read() -> None:
        try:
            async for chunk in source:
                await queue.put(chunk)
            await queue.put(None)
        except Exception as exc:
            await queue.put(exc)

    reader = asyncio.create_task(read())
    try:
        while True:
            try:
                async with asyncio.timeout(poll):
                    item = await queue.get()
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
