"""OpenTelemetry set-up shared by every service.

W3C trace context travels in gRPC metadata through the opentelemetry-instrumentation-grpc
interceptors, so one request keeps one trace id across router, cache and backends.
Export is OTLP/gRPC when an endpoint is configured; tests may pass their own span
processor (an in-memory exporter) instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from gearshift import __version__

_configured = False


def setup_telemetry(
    service_name: str,
    otlp_endpoint: str = "",
    extra_processors: Sequence[SpanProcessor] = (),
) -> None:
    """Installs global tracer and meter providers once per process."""
    global _configured
    if _configured:
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            for processor in extra_processors:
                provider.add_span_processor(processor)
        return
    resource = Resource.create({"service.name": service_name, "service.version": __version__})
    tracer_provider = TracerProvider(resource=resource)
    readers = []
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True, timeout=5),
                schedule_delay_millis=500,
            )
        )
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=otlp_endpoint, insecure=True, timeout=5),
                export_interval_millis=15_000,
            )
        )
    for processor in extra_processors:
        tracer_provider.add_span_processor(processor)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    _configured = True


def shutdown_telemetry() -> None:
    """Flushes pending spans so a clean exit loses none."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis=5_000)
        provider.shutdown()


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Extracts incoming W3C context and opens a server span per call."""
    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    """Injects W3C context into outgoing metadata and opens a client span per call."""
    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def current_trace_id() -> str:
    """The active span's trace id as 32 hex digits, or "" outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def insecure_channel(target: str, **options: Any) -> grpc.aio.Channel:
    """A traced client channel; every Gearshift hop uses this."""
    opts = [("grpc.keepalive_time_ms", 30_000), *options.items()]
    return grpc.aio.insecure_channel(target, options=opts, interceptors=client_interceptors())
