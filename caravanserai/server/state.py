"""Typed keys of the objects a cara-server app holds (``app[STORE]``, ``app[CONFIG]``, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from caravanserai.informer.recorder import EventRecorder
from caravanserai.registry import Registries
from caravanserai.server.config import ServerConfig
from caravanserai.server.metrics import Metrics
from caravanserai.store.types import Store

if TYPE_CHECKING:
    from caravanserai.server.watch_stream import WatchRegistry

CONFIG = web.AppKey("config", ServerConfig)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
REGISTRIES = web.AppKey("registries", Registries)
# The server's own Events (a project Created, Deleting), written in the background.
RECORDER = web.AppKey("recorder", EventRecorder)
WATCHES: web.AppKey[WatchRegistry] = web.AppKey("watches")
