"""OpenTelemetry set-up shared by every service.

W3C trace context travels in gRPC metadata through the opentelemetry-instrumentation-grpc
interceptors, so one request keeps one trace id across router, cache and backends.
Export is OTLP/gRPC when an endpoint is configured; tests may pass their own span
processor (an in-memory exporter) instead.

Tracing is a per-process choice made once, before servers and channels are built: with
nowhere to send spans the SDK is not installed and no tracing interceptor is added, so
the API's no-op tracer answers every `start_span` and a request pays nothing for it.
With an exporter, a parent-based ratio sampler keeps `trace_sample_ratio` of new traces
and follows the caller's sampled flag for the others, so one trace stays whole across
hops; span attributes are built only for spans that are recorded (`is_recording()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind

from gearshift import __version__

_configured = False
_tracing = False

CHANNEL_OPTIONS = (("grpc.keepalive_time_ms", 30_000),)


def tracing_enabled() -> bool:
    """Whether this process records spans (an exporter or a test processor is installed)."""
    return _tracing


def sampler_for(ratio: float) -> Sampler:
    """Keeps `ratio` of new traces; a caller's sampled flag decides for continued ones."""
    return ParentBased(TraceIdRatioBased(ratio))


def span_exporter(endpoint: str, protocol: str) -> SpanExporter:
    """The OTLP span exporter for `protocol`.

    The gRPC exporter is a synchronous gRPC channel inside a grpc.aio process; measured
    with 10% of requests sampled, it cost the proxy about twice the CPU per request of
    the HTTP exporter (docs/performance.md), hence the choice.
    """
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=5)


def metric_exporter(endpoint: str, protocol: str) -> MetricExporter:
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )

        return HttpMetricExporter(endpoint=endpoint.rstrip("/") + "/v1/metrics", timeout=5)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint, insecure=True, timeout=5)


class _ParentBasedTracer(Tracer):
    """The SDK tracer, minus its work for spans inside a trace that is not sampled.

    Under `ParentBased` sampling a child of an unsampled span is never sampled, yet the
    SDK still runs the sampler, its own span metrics and builds a fresh context for
    every such span: at a 10% ratio nine requests in ten paid that for each of their
    spans. Here a child of a local unsampled span is that span itself (as the API's
    no-op tracer does), and the first span under a remote unsampled caller gets its own
    span id and nothing else. Sampled traces and roots take the SDK's path unchanged.
    """

    def start_span(
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Any = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context)
        ctx = parent.get_span_context()
        if ctx.is_valid and not ctx.trace_flags.sampled and not links:
            if not ctx.is_remote:
                return parent
            span_id = self.id_generator.generate_span_id()
            return NonRecordingSpan(
                SpanContext(ctx.trace_id, span_id, False, ctx.trace_flags, ctx.trace_state)
            )
        return super().start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )


class _ParentBasedTracerProvider(TracerProvider):
    """Hands out `_ParentBasedTracer`s (its sampler is always `ParentBased`)."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        tracer = super().get_tracer(*args, **kwargs)
        if type(tracer) is Tracer:
            tracer.__class__ = _ParentBasedTracer  # same state, one method overridden
        return tracer


def build_tracer_provider(
    resource: Resource,
    otlp_endpoint: str,
    extra_processors: Sequence[SpanProcessor],
    sample_ratio: float,
    protocol: str = "grpc",
) -> TracerProvider:
    provider = _ParentBasedTracerProvider(resource=resource, sampler=sampler_for(sample_ratio))
    if otlp_endpoint:
        provider.add_span_processor(
            BatchSpanProcessor(span_exporter(otlp_endpoint, protocol), schedule_delay_millis=500)
        )
    for processor in extra_processors:
        provider.add_span_processor(processor)
    return provider


def setup_telemetry(
    service_name: str,
    otlp_endpoint: str = "",
    extra_processors: Sequence[SpanProcessor] = (),
    sample_ratio: float = 1.0,
    protocol: str = "grpc",
) -> None:
    """Installs global tracer and meter providers once per process (none without export)."""
    global _configured, _tracing
    if _configured:
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            for processor in extra_processors:
                provider.add_span_processor(processor)
        return
    _configured = True
    if not otlp_endpoint and not extra_processors:
        return  # the API's no-op providers stay in place
    resource = Resource.create({"service.name": service_name, "service.version": __version__})
    trace.set_tracer_provider(
        build_tracer_provider(resource, otlp_endpoint, extra_processors, sample_ratio, protocol)
    )
    readers = []
    if otlp_endpoint:
        readers.append(
            PeriodicExportingMetricReader(
                metric_exporter(otlp_endpoint, protocol), export_interval_millis=15_000
            )
        )
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    _tracing = True


def shutdown_telemetry() -> None:
    """Flushes pending spans so a clean exit loses none."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis=5_000)
        provider.shutdown()


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Extracts incoming W3C context; opens a server span per call when tracing.

    Without tracing, each call still continues (or starts) a trace id, cheaply
    (`trace_context`), so answers and logs carry one.
    """
    if not _tracing:
        from gearshift.runtime.trace_context import TraceContextServerInterceptor

        return [TraceContextServerInterceptor()]
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    from gearshift.runtime.tracing_server import TracingServerInterceptor

    return [TracingServerInterceptor(aio_server_interceptor())]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    """Injects W3C context into outgoing metadata and opens a client span per call."""
    if not _tracing:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    from gearshift.runtime.tracing_client import TracingClientInterceptor

    unary_request = (grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor)
    streaming = [
        i
        for i in aio_client_interceptors()  # type: ignore[no-untyped-call]
        if not isinstance(i, unary_request)
    ]
    return [TracingClientInterceptor(), *streaming]


def current_trace_id() -> str:
    """The active span's trace id as 32 hex digits, or "" outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def insecure_channel(target: str, **options: Any) -> grpc.aio.Channel:
    """A client channel (traced when this process traces); every Gearshift hop uses this."""
    opts = [*CHANNEL_OPTIONS, *options.items()]
    return grpc.aio.insecure_channel(target, options=opts, interceptors=client_interceptors())
