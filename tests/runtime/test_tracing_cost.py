"""Tracing costs nothing when off and keeps whole traces when sampled.

A service process exporting to a real OTLP receiver with `trace_sample_ratio` 0 must
record exactly the calls whose caller said "sampled" (W3C `traceparent` flag 01), with
the caller's span as parent; a process with nowhere to export installs no SDK at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from gearshift.runtime.telemetry import insecure_channel
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from tests.fixtures.otlp import OtlpReceiver

REPO = Path(__file__).resolve().parents[2]


def _start_echo(tmp: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    ready = tmp / "ready.json"
    log = (tmp / "service.log").open("wb")
    popen = subprocess.Popen(
        [
            sys.executable, "-m", "tests.runtime.echo_service", "--grpc-port", "0",
            "--metrics-port", "-1", "--ready-file", str(ready), *flags,
        ],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert popen.poll() is None, (tmp / "service.log").read_text()
        assert time.monotonic() < deadline, "service did not become ready"
        time.sleep(0.05)
    return popen, f"127.0.0.1:{json.loads(ready.read_text())['grpc_port']}"


async def test_ratio_zero_records_only_what_the_caller_sampled(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    service = f"echo-{uuid.uuid4().hex[:8]}"
    popen, address = _start_echo(
        tmp_path,
        "--otlp-endpoint", otlp_receiver.address, "--trace-sample-ratio", "0",
        "--service-name", service,
    )  # fmt: skip
    sampled, unsampled = uuid.uuid4().hex, uuid.uuid4().hex
    parent = uuid.uuid4().hex[:16]
    request = inference_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content="hi")]
    )
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            for metadata in (
                [("traceparent", f"00-{sampled}-{parent}-01")],
                [("traceparent", f"00-{unsampled}-{parent}-00")],
                [],
            ):
                reply = await stub.Generate(request, metadata=metadata, timeout=10)
                assert reply.text == "hi"
        spans = await otlp_receiver.wait_for(sampled, min_spans=1, timeout_s=15)
        assert [s.parent_span_id for s in spans] == [parent], spans
        await asyncio.sleep(1.5)  # the batch exporter's delay is 0.5 s
        mine = [s for s in otlp_receiver.spans if s.service == service]
        assert {s.trace_id for s in mine} == {sampled}, "a span nobody sampled was exported"
    finally:
        popen.terminate()
        popen.wait(30)


def test_without_an_exporter_no_sdk_and_no_interceptors_are_installed() -> None:
    probe = (
        "from opentelemetry import trace\n"
        "from gearshift.runtime import telemetry\n"
        "telemetry.setup_telemetry('probe')\n"
        "span = trace.get_tracer('t').start_span('s')\n"
        "server = [type(i).__name__ for i in telemetry.server_interceptors()]\n"
        "print(telemetry.tracing_enabled(), ','.join(server),"
        " telemetry.client_interceptors(), span.is_recording(),"
        " type(trace.get_tracer_provider()).__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    # Only the trace-id interceptor (continues or mints ids, records nothing), no SDK.
    assert done.stdout.split() == [
        "False",
        "TraceContextServerInterceptor",
        "[]",
        "False",
        "ProxyTracerProvider",
    ]


async def test_client_spans_only_when_sampled_and_the_callee_follows(
    tmp_path: Path, otlp_receiver: OtlpReceiver, span_exporter: InMemorySpanExporter
) -> None:
    service = f"echo-{uuid.uuid4().hex[:8]}"
    popen, address = _start_echo(
        tmp_path, "--otlp-endpoint", otlp_receiver.address, "--service-name", service
    )
    request = inference_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content="hi")]
    )
    tracer = trace.get_tracer("test")
    unsampled = SpanContext(
        trace_id=int(uuid.uuid4().hex, 16),
        span_id=int(uuid.uuid4().hex[:16], 16),
        is_remote=True,
        trace_flags=TraceFlags(0),
    )
    try:
        channel = insecure_channel(address)  # the channel every Gearshift hop uses
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with tracer.start_as_current_span("caller") as caller:
            await stub.Generate(request, timeout=10)
        with trace.use_span(NonRecordingSpan(unsampled)):
            await stub.Generate(request, timeout=10)
        await channel.close()
        sampled_id = format(caller.get_span_context().trace_id, "032x")
        (client,) = [
            s
            for s in span_exporter.get_finished_spans()
            if s.kind == SpanKind.CLIENT and s.context.trace_id == int(sampled_id, 16)
        ]
        assert client.name.endswith("InferenceService/Generate")
        assert client.parent is not None
        assert client.parent.span_id == caller.get_span_context().span_id
        (server,) = await otlp_receiver.wait_for(sampled_id, min_spans=1, timeout_s=15)
        assert server.parent_span_id == format(client.context.span_id, "016x")
        await asyncio.sleep(1.5)
        mine = [s for s in otlp_receiver.spans if s.service == service]
        assert {s.trace_id for s in mine} == {sampled_id}, "the unsampled call was recorded"
        finished = span_exporter.get_finished_spans()
        assert not [s for s in finished if s.context.trace_id == unsampled.trace_id]
    finally:
        popen.terminate()
        popen.wait(30)


async def test_spans_reach_an_otlp_http_collector(tmp_path: Path) -> None:
    received: list[str] = []
    got_one = asyncio.Event()

    async def traces(request: web.Request) -> web.Response:
        export = trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                received.extend(s.trace_id.hex() for s in scope_spans.spans)
        got_one.set()
        body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    popen, address = await asyncio.to_thread(
        _start_echo,
        tmp_path,
        "--otlp-endpoint", f"http://127.0.0.1:{port}", "--otlp-protocol", "http/protobuf",
    )  # fmt: skip
    sampled = uuid.uuid4().hex
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            await inference_pb2_grpc.InferenceServiceStub(channel).Generate(
                inference_pb2.GenerateRequest(
                    messages=[common_pb2.ChatMessage(role="user", content="hi")]
                ),
                metadata=[("traceparent", f"00-{sampled}-{uuid.uuid4().hex[:16]}-01")],
                timeout=10,
            )
        await asyncio.wait_for(got_one.wait(), 15)
        assert sampled in received
    finally:
        popen.terminate()
        await asyncio.to_thread(popen.wait, 30)
        await runner.cleanup()
