"""Optional OpenTelemetry traces (OTLP/gRPC) when ``OTEL_COLLECTOR_URL`` is set.

OpenTelemetry is an optional extra (``pip install 'caravanserai[otel]'``): without it the
server runs untraced and says so once in the log, rather than refusing to start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from caravanserai.logging import get_logger
from caravanserai.server.metrics import route_label

log = get_logger("caravanserai.server.tracing")


def setup_tracing(collector_url: str | None) -> tuple[Middleware | None, Callable[[], None]]:
    """A span-per-request middleware and a shutdown function (flushes pending spans).

    Returns ``(None, no-op)`` when no collector is configured or OpenTelemetry is missing.
    """
    if not collector_url:
        return None, lambda: None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "tracing.unavailable",
            otel_collector_url=collector_url,
            hint="OTEL_COLLECTOR_URL is set but OpenTelemetry is not installed "
            "(pip install 'caravanserai[otel]'); traces are not exported",
        )
        return None, lambda: None

    provider = TracerProvider(resource=Resource.create({"service.name": "cara-server"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=collector_url, insecure=True))
    )
    tracer = provider.get_tracer("caravanserai.server")
    server_kind: Any = trace.SpanKind.SERVER

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = f"{request.method} {route_label(request)}"
        with tracer.start_as_current_span(name, kind=server_kind) as span:
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("url.path", request.path)
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            return response

    log.info("tracing.enabled", otel_collector_url=collector_url)
    return middleware, provider.shutdown
