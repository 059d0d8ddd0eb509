"""Prometheus metrics of one cara-server app, and the request log/metrics middleware.

Each app owns its registry (not the process-global default), so several apps in one process
(tests, benchmarks) do not clash over metric names.
"""

from __future__ import annotations

import asyncio
import os
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from caravanserai.logging import get_logger

log = get_logger("caravanserai.server.http")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The server's metrics; ``render()`` gives the text exposition for ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cara_http_requests",
            "HTTP requests served, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "cara_http_request_duration_seconds",
            "Time to serve a request (for watches: the stream's lifetime).",
            ("route", "method"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.open_watches = Gauge(
            "cara_watches_open",
            "Watch streams currently open, by kind.",
            ("kind",),
            registry=self.registry,
            multiprocess_mode="livesum",  # with --workers: the sum over live workers
        )
        self.events_delivered = Counter(
            "cara_watch_events_delivered",
            "Watch events written to clients, by kind and event type.",
            ("kind", "type"),
            registry=self.registry,
        )
        self.slow_watchers = Counter(
            "cara_watch_slow_terminated",
            "Watch streams ended with 410 because the client read slower than events came "
            "(more than watch_queue_bytes queued).",
            ("kind",),
            registry=self.registry,
        )
        self.revision = Gauge(
            "cara_store_revision",
            "The highest store revision this server has seen (writes, lists, watch events).",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self._revision = 0

    def observe_revision(self, revision: int) -> None:
        # Only ever moves forward: responses finish out of order.
        if revision > self._revision:
            self._revision = revision
            self.revision.set(revision)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # --workers: every worker's values, aggregated (caravanserai/server/workers.py).
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        # The informer library (work queues, reconcilers, leader election) registers in the
        # process-wide default registry, so a third-party controller's metrics show up too.
        return generate_latest(self.registry) + generate_latest(REGISTRY)


METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def route_label(request: web.Request) -> str:
    """The route template (``/api/v1/projects/{name}``), never the raw path: bounded labels."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None or getattr(info, "http_exception", None) is not None:
        return "unmatched"
    return str(resource.canonical)


SLOW_REQUEST_SECONDS = 1.0
"""A request that took longer is logged at info even when it succeeded."""


def observe_middleware(metrics: Metrics) -> Middleware:
    """Outermost middleware: the metrics and a log line for every request (info for errors
    and slow ones, debug for the rest)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # only redirects reach here (problems are answered)
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # nginx's "client closed request": not a server error
            raise
        finally:
            elapsed = time.perf_counter() - start
            route = route_label(request)
            metrics.requests.labels(route, request.method, str(status)).inc()
            metrics.latency.labels(route, request.method).observe(elapsed)
            # Like Nomad's and kube-apiserver's, routine requests log at debug: at a thousand
            # agents' heartbeats a line each cost a tenth of the server's CPU. Failures and
            # slow requests stay visible; every write has its audit line anyway.
            emit = log.info if status >= 400 or elapsed >= SLOW_REQUEST_SECONDS else log.debug
            emit(
                "request",
                method=request.method,
                path=request.path,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )

    return middleware
