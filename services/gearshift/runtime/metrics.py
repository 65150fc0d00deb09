"""Prometheus metrics: the /metrics endpoint and per-RPC counters every service has."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc
from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from gearshift.runtime.interceptors import Handler, WrappingInterceptor

RPC_HANDLED = Counter(
    "gearshift_grpc_server_handled_total",
    "RPCs completed by the server, by method and status code.",
    ["service", "method", "code"],
)
RPC_LATENCY = Histogram(
    "gearshift_grpc_server_handling_seconds",
    "Time from receiving an RPC to its end (for streams: the last message).",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def start_metrics_server(host: str, port: int) -> int | None:
    """Serves /metrics on a background thread; returns the bound port (None if disabled)."""
    if port < 0:
        return None
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)


_children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}


def child(metric: MetricWrapperBase, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once per label set.

    prometheus-client validates and hashes the label values on every `labels()` call;
    on a hot path that was a few percent of a request's CPU, for a child that never
    changes (children are never removed here).
    """
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def _split(full_method: str) -> tuple[str, str]:
    _, service, method = full_method.split("/", 2)
    return service, method


def _code_of(exc: BaseException | None, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if exc is None:
        return "OK"
    if isinstance(exc, grpc.aio.AbortError):
        return "ABORTED_BY_HANDLER"
    return "CANCELLED" if isinstance(exc, BaseException) else "UNKNOWN"


class _MethodRecorder:
    """The latency child and the per-code counters of one RPC method."""

    def __init__(self, full_method: str) -> None:
        self.service, self.method = _split(full_method)
        self.latency = RPC_LATENCY.labels(self.service, self.method)
        self.handled: dict[str, Any] = {}

    def __call__(self, start: float, exc: BaseException | None, context: Any) -> None:
        self.latency.observe(time.perf_counter() - start)
        code = _code_of(exc, context)
        counter = self.handled.get(code)
        if counter is None:
            counter = self.handled[code] = RPC_HANDLED.labels(self.service, self.method, code)
        counter.inc()


def _wrap(handler: grpc.RpcMethodHandler[Any, Any], record: _MethodRecorder) -> Any:
    if handler.unary_unary is not None:
        inner_unary = handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            start, exc = time.perf_counter(), None
            try:
                return await inner_unary(request, context)
            except BaseException as e:
                exc = e
                raise
            finally:
                record(start, exc, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_stream = cast(Callable[..., AsyncIterator[Any]], handler.unary_stream)

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            start, exc = time.perf_counter(), None
            try:
                async for item in inner_stream(request, context):
                    yield item
            except BaseException as e:
                exc = e
                raise
            finally:
                record(start, exc, context)

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class PrometheusServerInterceptor(WrappingInterceptor):
    """Counts and times every RPC by method and final status code."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        return cast(Handler, _wrap(handler, _MethodRecorder(method)))
