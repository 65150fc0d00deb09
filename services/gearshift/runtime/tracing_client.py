"""The client span of every unary-request gRPC call a Gearshift service makes.

Replaces opentelemetry-instrumentation-grpc's aio client interceptors on the hot path:
when the trace the call belongs to is not sampled, no span is created at all, only the
W3C context is injected into the metadata (so the callee continues the same unsampled
trace instead of starting a new root); when it is sampled, a CLIENT span named after the
full method is opened around the call, its attributes set, and its context injected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc.aio import ClientCallDetails, Metadata
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import SpanKind, Status, StatusCode


class _MetadataSetter(Setter[Metadata]):
    def set(self, carrier: Metadata, key: str, value: str) -> None:
        carrier[key] = value


_SETTER = _MetadataSetter()
_tracer = trace.get_tracer("gearshift.grpc.client")


def _with_context(details: ClientCallDetails) -> ClientCallDetails:
    metadata = Metadata(*tuple(details.metadata)) if details.metadata else Metadata()
    propagate.inject(metadata, setter=_SETTER)
    return ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


def _unsampled_parent() -> bool:
    ctx = trace.get_current_span().get_span_context()
    return ctx.is_valid and not ctx.trace_flags.sampled


def _method_name(details: ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


def _start(details: ClientCallDetails) -> trace.Span:
    name = _method_name(details)
    span = _tracer.start_span(name, kind=SpanKind.CLIENT)
    if span.is_recording():
        _, service, method = name.split("/", 2)
        span.set_attributes({"rpc.system": "grpc", "rpc.service": service, "rpc.method": method})
    return span


def _end(span: trace.Span, code: grpc.StatusCode, details: str | None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details or ''}"))
    span.end()


class TracingClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Continues the current trace in every unary-request call; spans only when sampled."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[ClientCallDetails, Any], Any],
        client_call_details: ClientCallDetails,
        request: Any,
    ) -> Any:
        if _unsampled_parent():
            return await continuation(_with_context(client_call_details), request)
        span = _start(client_call_details)
        if not span.is_recording():
            with trace.use_span(span, end_on_exit=True):
                return await continuation(_with_context(client_call_details), request)
        with trace.use_span(span, end_on_exit=False):
            details = _with_context(client_call_details)
        call = None
        try:
            call = await continuation(details, request)
            code, text = await call.code(), await call.details()
        except grpc.aio.AioRpcError as exc:
            _end(span, exc.code(), exc.details())
            raise
        except BaseException:
            # The caller cancelled while this interceptor awaits the call's end: grpc.aio
            # cancels only this interceptor's task, not the call, so without this the
            # callee would never hear of it (a vLLM engine would generate on unseen).
            if call is not None:
                call.cancel()
            _end(span, grpc.StatusCode.CANCELLED, "client cancelled")
            raise
        _end(span, code, text)
        return call

    async def intercept_unary_stream(
        self,
        continuation: Callable[[ClientCallDetails, Any], Any],
        client_call_details: ClientCallDetails,
        request: Any,
    ) -> Any:
        if _unsampled_parent():
            return await continuation(_with_context(client_call_details), request)
        span = _start(client_call_details)
        if not span.is_recording():
            with trace.use_span(span, end_on_exit=True):
                return await continuation(_with_context(client_call_details), request)
        with trace.use_span(span, end_on_exit=False):
            details = _with_context(client_call_details)
        call = await continuation(details, request)

        async def responses() -> AsyncIterator[Any]:
            code, text = grpc.StatusCode.OK, None
            try:
                async for item in call:
                    yield item
            except grpc.aio.AioRpcError as exc:
                code, text = exc.code(), exc.details()
                raise
            except BaseException:
                code, text = grpc.StatusCode.CANCELLED, "client stopped reading"
                raise
            finally:
                _end(span, code, text)

        return responses()
