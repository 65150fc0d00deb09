"""The runtime's promises, checked on a real process over real gRPC."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gearshift.runtime.errors import field_violations
from gearshift.runtime.server import EXIT_SERVICE_FAILED
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    popen: subprocess.Popen[bytes]
    address: str
    metrics_port: int
    log: Path


@pytest.fixture
def echo_process(tmp_path: Path) -> Iterator[ServiceProcess]:
    ready = tmp_path / "ready.json"
    log = tmp_path / "service.log"
    env = {**os.environ, "ECHO_FAIL_FILE": str(tmp_path / "fail")}
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [
                sys.executable, "-m", "tests.runtime.echo_service",
                "--grpc-port", "0", "--metrics-port", "0", "--grace-period-s", "10",
                "--ready-file", str(ready),
            ],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert popen.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "service did not become ready"
        time.sleep(0.05)
    ports = json.loads(ready.read_text())
    yield ServiceProcess(popen, f"127.0.0.1:{ports['grpc_port']}", ports["metrics_port"], log)
    if popen.poll() is None:
        popen.kill()
        popen.wait()


def chat(text: str, delay_ms: int | None = None) -> inference_pb2.GenerateRequest:
    sampling = common_pb2.SamplingParams()
    if delay_ms is not None:
        sampling.seed = delay_ms
    return inference_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content=text)], sampling=sampling
    )


async def test_health_serving_and_reflection_lists_services(echo_process: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(echo_process.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        named = await health.Check(
            health_pb2.HealthCheckRequest(service="gearshift.v1.InferenceService"), timeout=5
        )
        assert named.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        services = []
        async for response in reflection.ServerReflectionInfo(iter([request]), timeout=5):
            services = [s.name for s in response.list_services_response.service]
        assert "gearshift.v1.InferenceService" in services
        assert "grpc.health.v1.Health" in services


async def test_sigterm_lets_in_flight_call_finish(echo_process: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(echo_process.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        await stub.Generate(chat("warm"), timeout=5)  # the channel is connected
        slow = asyncio.ensure_future(stub.Generate(chat("still here", delay_ms=1500), timeout=20))
        await asyncio.sleep(0.3)
        echo_process.popen.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # New calls are refused while the slow one drains...
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Generate(chat("too late"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # ...and the in-flight call completes normally.
        reply = await slow
        assert reply.text == "still here"
        assert reply.finish_reason == common_pb2.FINISH_REASON_STOP
    assert echo_process.popen.wait(timeout=15) == 0


async def test_draining_keeps_the_port_open_with_health_not_serving(
    echo_process: ServiceProcess,
) -> None:
    """A probe on a NEW connection during drain reads NOT_SERVING, not connection refused."""
    async with grpc.aio.insecure_channel(echo_process.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        await stub.Generate(chat("warm"), timeout=5)
        slow = asyncio.ensure_future(stub.Generate(chat("in flight", delay_ms=2000), timeout=20))
        await asyncio.sleep(0.3)
        echo_process.popen.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with grpc.aio.insecure_channel(echo_process.address) as probe_channel:
            probe = health_pb2_grpc.HealthStub(probe_channel)
            reply = await probe.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            fresh = inference_pb2_grpc.InferenceServiceStub(probe_channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await fresh.Generate(chat("new client"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "draining" in (refused.value.details() or "")
        assert (await slow).text == "in flight"
    # Idle once the slow call is done: it exits well before the 10 s grace period.
    started = time.monotonic()
    assert echo_process.popen.wait(timeout=15) == 0
    assert time.monotonic() - started < 5


async def test_an_app_that_can_no_longer_serve_turns_not_serving_and_exits_non_zero(
    echo_process: ServiceProcess, tmp_path: Path
) -> None:
    """What a dead engine does to the SLM server, on the echo service: fast, no vLLM."""
    async with grpc.aio.insecure_channel(echo_process.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        assert (
            await health.Check(request, timeout=5)
        ).status == health_pb2.HealthCheckResponse.SERVING
        (tmp_path / "fail").write_text("")
        started = time.monotonic()
        while (
            await health.Check(request, timeout=5)
        ).status == health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() - started < 2, "health still SERVING"
            await asyncio.sleep(0.05)
    assert echo_process.popen.wait(timeout=10) == EXIT_SERVICE_FAILED
    assert "can no longer serve: the test said so" in echo_process.log.read_text()


async def test_malformed_request_names_the_bad_fields(echo_process: ServiceProcess) -> None:
    bad = inference_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="robot", content="hi")],
        sampling=common_pb2.SamplingParams(temperature=3.5),
    )
    async with grpc.aio.insecure_channel(echo_process.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(bad, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in field_violations(err.value)}
    assert fields == {"messages[0].role", "sampling.temperature"}
    assert "messages[0].role" in (err.value.details() or "")


async def test_metrics_endpoint_counts_rpcs_by_code(echo_process: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(echo_process.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        await stub.Generate(chat("count me"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Generate(inference_pb2.GenerateRequest(), timeout=5)
    url = f"http://127.0.0.1:{echo_process.metrics_port}/metrics"
    ok = 'method="Generate",service="gearshift.v1.InferenceService"'
    wanted = (
        f'gearshift_grpc_server_handled_total{{code="OK",{ok}}} 1.0',
        'code="INVALID_ARGUMENT"',
    )
    # The server counts an RPC just after its status is sent, so the client can see the
    # error a moment before the counter moves: poll briefly instead of reading once.
    deadline = time.monotonic() + 5
    while True:
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )
        if all(w in body for w in wanted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    for w in wanted:
        assert w in body


async def test_logs_are_json_lines(echo_process: ServiceProcess) -> None:
    echo_process.popen.send_signal(signal.SIGTERM)
    echo_process.popen.wait(timeout=15)
    records = [json.loads(line) for line in echo_process.log.read_text().splitlines() if line]
    assert records, "no log lines"
    assert all({"time", "level", "message", "service", "trace_id"} <= r.keys() for r in records)
    assert any("serving on port" in r["message"] for r in records)
