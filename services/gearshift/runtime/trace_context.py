"""W3C trace context for a process that does not trace: continue or mint, pass on, log.

With no exporter the OpenTelemetry SDK is not loaded and nothing is recorded, but a trace
id is still what users correlate logs and answers by. So each call that enters such a
process gets a `LightSpan` (the API's `NonRecordingSpan`) as its current span: the
caller's `traceparent` trace id and sampled flag when it sent a valid one, otherwise a
fresh random trace id, not sampled (a process that does not trace does not ask the
next hops to record). Everything that reads the current span then works unchanged:
the no-op tracer hands the same span to nested `start_as_current_span` blocks, the
log filter writes its trace id, responses return it, and `outgoing_metadata()` gives
the `traceparent` for the next gRPC hop (precomputed once per call).

The cost is one header parse (or one `getrandbits`), two small objects and one context
variable set per call (docs/performance.md). When the process does trace, the SDK's
propagator and the tracing interceptors do all of this instead.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from gearshift.runtime.interceptors import Handler, WrappingInterceptor

_HEX = frozenset("0123456789abcdef")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_getrandbits = random.getrandbits  # ids need to be unique, not secret (the SDK does the same)


class LightSpan(NonRecordingSpan):
    """The current span of a call in a process that does not trace."""

    __slots__ = ("_traceparent",)

    def __init__(self, trace_id: int, flags: TraceFlags) -> None:
        super().__init__(SpanContext(trace_id, _getrandbits(64) or 1, False, flags))
        self._traceparent = ""

    @property
    def traceparent(self) -> str:
        """This span as the next hop's parent (formatted once, when first asked)."""
        if not self._traceparent:
            c = self.get_span_context()
            self._traceparent = f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}"
        return self._traceparent


def parse_traceparent(value: str | None) -> tuple[int, TraceFlags] | None:
    """The trace id and flags of a valid W3C `traceparent`, else None.

    Version 00 is exactly `00-<32 hex>-<16 hex>-<2 hex>`; a later version may append
    fields after another dash (read as version 00, as the spec asks); version ff, upper
    case, and all-zero ids are invalid.
    """
    if value is None or len(value) < 55:
        return None
    version, trace_hex, parent_hex, flags_hex = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-" or version == "ff":
        return None
    if len(value) > 55 and (version == "00" or value[55] != "-"):
        return None
    if not _HEX.issuperset(value[:2] + trace_hex + parent_hex + flags_hex):
        return None
    trace_id = int(trace_hex, 16)
    if trace_id == 0 or int(parent_hex, 16) == 0:
        return None
    return trace_id, _SAMPLED if int(flags_hex, 16) & 1 else _NOT_SAMPLED


def light_span(traceparent: str | None) -> LightSpan:
    """The caller's trace continued (when `traceparent` is valid), or a new one."""
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return LightSpan(_getrandbits(128) or 1, _NOT_SAMPLED)
    return LightSpan(*parsed)


def enter(traceparent: str | None) -> None:
    """Makes `light_span(traceparent)` the current span of the running task."""
    otel_context.attach(trace.set_span_in_context(light_span(traceparent)))


class LightScope:
    """`with`: the light span of `traceparent` is current inside, the previous after.

    What the no-op tracer's `start_as_current_span` would do for the same context,
    without its two generator-based context managers (about 8 us less per request).
    """

    __slots__ = ("_span", "_token")

    def __init__(self, traceparent: str | None) -> None:
        self._span = light_span(traceparent)
        self._token: object = None

    def __enter__(self) -> LightSpan:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]


def outgoing_metadata() -> tuple[tuple[str, str], ...] | None:
    """`metadata=` for a gRPC call: the current light span's `traceparent`, if any.

    None when the process traces (its client interceptor injects the context) or the
    call belongs to no request.
    """
    span = trace.get_current_span()
    if type(span) is LightSpan:
        return (("traceparent", span.traceparent),)
    return None


Metadata = Sequence[tuple[str, str | bytes]]


def _traceparent(metadata: Metadata | None) -> str | None:
    for key, value in metadata or ():
        if key == "traceparent":
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def _wrap(handler: grpc.RpcMethodHandler[Any, Any]) -> Any:
    # No detach: grpc.aio runs every call in a task of its own, so the context variable
    # set here lives and dies with the call.
    if handler.unary_unary is not None:
        inner_unary = handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            enter(_traceparent(context.invocation_metadata()))
            return await inner_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_stream = cast(Callable[..., AsyncIterator[Any]], handler.unary_stream)

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            enter(_traceparent(context.invocation_metadata()))
            async for item in inner_stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class TraceContextServerInterceptor(WrappingInterceptor):
    """Gives every Gearshift call a light span (the process does not trace)."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        return cast(Handler, _wrap(handler))
