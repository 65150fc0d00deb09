"""A caller's cancel reaches the callee on every Gearshift hop, traced or not.

The router cancels backend calls whenever their answer is no longer wanted (a client gone,
a losing multi-route branch, a deadline of its own); the backend only stops generating if
the cancel crosses the wire. The client tracing interceptor waits for the call's end, so
it must pass a cancel on to the call it wraps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace

from gearshift.runtime.telemetry import client_interceptors, insecure_channel
from gearshift.runtime.tracing_client import TracingClientInterceptor
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc


class SlowServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Answers after a minute unless cancelled; records that it was."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inference_pb2.GenerateResponse:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return inference_pb2.GenerateResponse(text="too late")


@pytest.fixture
async def slow_server() -> AsyncIterator[tuple[str, SlowServicer]]:
    servicer = SlowServicer()
    server = grpc.aio.server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(0)


def _request() -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content="hi")]
    )


@pytest.mark.parametrize("how", ["call.cancel()", "task.cancel()"])
@pytest.mark.parametrize("sampled", [True, False], ids=["sampled", "unsampled"])
async def test_a_cancelled_unary_call_is_cancelled_at_the_callee(
    slow_server: tuple[str, SlowServicer], how: str, sampled: bool
) -> None:
    address, servicer = slow_server
    # The test session traces (tests/fixtures/otlp.py): the channel has the interceptor.
    assert any(isinstance(i, TracingClientInterceptor) for i in client_interceptors())
    parent = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=0x5EED,
            span_id=0xBEEF,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else 0),
        )
    )
    async with insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with trace.use_span(parent):
            call = stub.Generate(_request(), timeout=120)
            task = asyncio.ensure_future(call)
        await asyncio.wait_for(servicer.started.wait(), 10)
        if how == "call.cancel()":
            call.cancel()
        else:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(servicer.cancelled.wait(), 5)
