"""Helpers for the client/informer/leader integration tests: a real cara-server in-process.

(No tests here; imported by test_client*.py, test_informer*.py.)
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from caravanserai.server.app import create_app
from caravanserai.server.config import ServerConfig
from caravanserai.store.types import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    """A cara-server app on 127.0.0.1 that can be stopped and started again (same port)."""

    def __init__(self, store: Store, port: int | None = None, **config: Any) -> None:
        self.store = store
        self.port = port or free_port()
        config.setdefault("bookmark_interval", 1.0)
        # Open on loopback: these tests are about the client, not authorization.
        config.setdefault("insecure_allow_anonymous", True)
        self.config = ServerConfig(
            database_url="postgresql://unused", host="127.0.0.1", port=self.port, **config
        )
        self._runner: web.AppRunner | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = create_app(self.config, self.store)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        for _ in range(50):
            try:
                await site.start()
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"cannot listen on port {self.port}")
        self._runner = runner
        self.starts += 1

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


@asynccontextmanager
async def running_server(store: Store, **config: Any) -> AsyncIterator[RunningServer]:
    server = RunningServer(store, **config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def project_manifest(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "caravanserai/v1",
        "kind": "Project",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"services": [{"name": "web", "image": "nginx:alpine"}]},
    }


def node_manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": "caravanserai/v1", "kind": "Node", "metadata": {"name": name}}


async def eventually(cond: Any, within: float = 10.0, interval: float = 0.02) -> None:
    """Wait until ``cond()`` (sync or async) is truthy."""
    async with asyncio.timeout(within):
        while True:
            result = cond()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)
