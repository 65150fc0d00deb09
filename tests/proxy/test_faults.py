"""Upstream faults, from a test-controlled HTTP server on loopback, through the real proxy."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from gearshift.proxy.app import ProxyApp, Settings
from gearshift.proxy.config import ProxyConfig
from gearshift.runtime.errors import retry_delay_s
from gearshift.runtime.server import GrpcServiceHost
from gearshift.runtime.telemetry import insecure_channel
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from tests.fixtures.vllm_upstream import free_port
from tests.proxy.fault_server import (
    FaultServer,
    endless_stream,
    garbage,
    never_streams,
    paced,
    slow,
    status,
    truncated_stream,
)

SECRET = "sk-test-7f3a9c1e5b2d4f6a8c0e"
Stub = inference_pb2_grpc.InferenceServiceStub
MakeProxy = Callable[..., Awaitable[Stub]]


@pytest.fixture
async def servers() -> AsyncIterator[Callable[[str], Awaitable[FaultServer]]]:
    started: list[FaultServer] = []

    async def make(name: str) -> FaultServer:
        srv = FaultServer(name)
        await srv.start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        await srv.stop()


@pytest.fixture
async def make_proxy() -> AsyncIterator[MakeProxy]:
    hosts: list[GrpcServiceHost] = []
    channels: list[grpc.aio.Channel] = []

    async def make(
        upstreams: list[dict[str, Any]],
        *,
        retry: dict[str, Any] | None = None,
        breaker: dict[str, Any] | None = None,
        rate_limits: dict[str, Any] | None = None,
        price: dict[str, Any] | None = None,
    ) -> Stub:
        config = ProxyConfig.model_validate(
            {
                "models": [
                    {"name": "big", "upstreams": upstreams, "price": price or {}},
                ],
                "retry": retry
                or {"max_attempts": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.05},
                "breaker": breaker or {"failure_threshold": 50, "cooldown_s": 30},
                "rate_limits": rate_limits or {},
            }
        )
        settings = Settings(grpc_port=0, metrics_port=-1)
        host = GrpcServiceHost(ProxyApp(settings, config), settings)
        port = await host.start()
        hosts.append(host)
        channel = insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return Stub(channel)

    yield make
    for channel in channels:
        await channel.close()
    for host in hosts:
        await host.stop(0)


def up(srv: FaultServer, **extra: Any) -> dict[str, Any]:
    return {"name": srv.name, "base_url": srv.base_url, "model": f"{srv.name}-model", **extra}


def request(tenant: str = "acme", **sampling: Any) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(
        tenant=tenant,
        model="big",
        messages=[common_pb2.ChatMessage(role="user", content="Say hello world.")],
        sampling=common_pb2.SamplingParams(**sampling),
    )


async def test_sampling_params_and_model_are_mapped(servers: Any, make_proxy: MakeProxy) -> None:
    a = await servers("a")
    stub = await make_proxy([up(a)])
    await stub.Generate(
        request(
            max_tokens=7,
            temperature=0.3,
            top_p=0.9,
            stop=["\n\n"],
            seed=42,
            logprobs=True,
            top_logprobs=3,
        ),
        timeout=10,
    )
    chunks = [c async for c in stub.GenerateStream(request(), timeout=10)]
    unary_body, stream_body = a.received[0].body, a.received[1].body
    assert unary_body["model"] == "a-model"
    assert unary_body["messages"] == [{"role": "user", "content": "Say hello world."}]
    # Unary calls are streamed from the upstream too (see test_a_long_unary_answer_...).
    assert unary_body["stream"] is True
    assert unary_body["max_tokens"] == 7
    assert unary_body["temperature"] == pytest.approx(0.3)
    assert unary_body["top_p"] == pytest.approx(0.9)
    assert unary_body["stop"] == ["\n\n"]
    assert unary_body["seed"] == 42
    assert unary_body["logprobs"] is True and unary_body["top_logprobs"] == 3
    assert stream_body["stream"] is True
    assert stream_body["stream_options"] == {"include_usage": True}
    assert "temperature" not in stream_body  # unset stays unset (the upstream's default)
    assert "".join(c.text_delta for c in chunks) == "Hello world"
    assert chunks[-1].usage.total_tokens == 100


async def test_retry_after_on_429_is_honoured(servers: Any, make_proxy: MakeProxy) -> None:
    a = await servers("a")
    a.script += [status(429, "slow down", {"Retry-After": "1"})]
    stub = await make_proxy([up(a)])
    resp = await stub.Generate(request(), timeout=20)
    assert resp.text == "Hello world"
    assert len(a.received) == 2
    # backoff alone would wait ~10 ms; the second try must come after the Retry-After.
    assert a.received[1].at - a.received[0].at >= 0.95


async def test_502_503_are_retried_with_backoff(servers: Any, make_proxy: MakeProxy) -> None:
    a = await servers("a")
    a.script += [status(502), status(503)]
    stub = await make_proxy([up(a)])
    resp = await stub.Generate(request(), timeout=20)
    assert resp.upstream == "a" and resp.text == "Hello world"
    assert len(a.received) == 3


async def test_500_is_not_retried_but_fails_over(servers: Any, make_proxy: MakeProxy) -> None:
    a, b = await servers("a"), await servers("b")
    a.script += [status(500)]
    stub = await make_proxy([up(a, priority=0), up(b, priority=1)])
    resp = await stub.Generate(request(), timeout=20)
    assert resp.upstream == "b"
    assert len(a.received) == 1 and len(b.received) == 1
    assert b.received[0].body["model"] == "b-model"


async def test_connection_refused_fails_over(servers: Any, make_proxy: MakeProxy) -> None:
    b = await servers("b")
    dead = {"name": "dead", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m"}
    stub = await make_proxy(
        [dead, up(b, priority=1)], retry={"max_attempts": 2, "backoff_initial_s": 0.01}
    )
    resp = await stub.Generate(request(), timeout=20)
    assert resp.upstream == "b"
    chunks = [c async for c in stub.GenerateStream(request(), timeout=20)]
    assert chunks[0].upstream == "b"


async def test_slow_upstream_times_out_and_fails_over(servers: Any, make_proxy: MakeProxy) -> None:
    a, b = await servers("a"), await servers("b")
    a.script += [slow(5.0)]
    stub = await make_proxy([up(a, read_timeout_s=0.3), up(b, priority=1)])
    resp = await stub.Generate(request(), timeout=20)
    assert resp.upstream == "b"
    assert len(a.received) == 1  # a read timeout is not retried on the same upstream


async def test_call_deadline_bounds_the_upstream_call(servers: Any, make_proxy: MakeProxy) -> None:
    a = await servers("a")
    a.script += [slow(60.0)]
    stub = await make_proxy([up(a)])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(request(), timeout=1.0)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(a.disconnected.wait(), 15)  # the proxy hung up on the upstream


async def test_malformed_json_is_a_clear_error_and_proxy_survives(
    servers: Any, make_proxy: MakeProxy
) -> None:
    a = await servers("a")
    a.script += [garbage(), status(200, '{"choices": []}'), status(418, "teapot")]
    stub = await make_proxy([up(a)])
    for expected in ("malformed JSON", "without a usable choice", "HTTP 418"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "'a'" in (err.value.details() or "")
        assert expected in (err.value.details() or "")
    assert (await stub.Generate(request(), timeout=10)).text == "Hello world"


async def test_upstream_400_is_invalid_argument_without_failover(
    servers: Any, make_proxy: MakeProxy
) -> None:
    a, b = await servers("a"), await servers("b")
    a.script += [status(400, '{"error": "max_tokens is too large"}')]
    stub = await make_proxy([up(a), up(b, priority=1)])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(request(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_tokens is too large" in (err.value.details() or "")
    assert not b.received


@pytest.mark.parametrize("abrupt", [False, True])
async def test_truncated_stream_after_start_is_an_error_not_a_retry(
    servers: Any, make_proxy: MakeProxy, abrupt: bool
) -> None:
    a, b = await servers("a"), await servers("b")
    a.script += [truncated_stream(pieces=2, abrupt=abrupt)]
    stub = await make_proxy([up(a), up(b, priority=1)])
    got: list[inference_pb2.GenerateChunk] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for chunk in stub.GenerateStream(request(), timeout=10):
            got.append(chunk)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "incomplete" in (err.value.details() or "") and "'a'" in (err.value.details() or "")
    relayed = "".join(c.text_delta for c in got)
    if abrupt:  # events buffered when the socket dropped may be lost with it
        assert relayed and "Hello ".startswith(relayed)
    else:
        assert relayed == "Hello "
    assert not b.received, "a stream that has started must never be retried elsewhere"


async def test_stream_failing_before_start_fails_over(servers: Any, make_proxy: MakeProxy) -> None:
    a, b = await servers("a"), await servers("b")
    a.script += [status(503), status(503), status(503)]
    stub = await make_proxy([up(a), up(b, priority=1)])
    chunks = [c async for c in stub.GenerateStream(request(), timeout=10)]
    assert chunks[0].upstream == "b"
    assert "".join(c.text_delta for c in chunks) == "Hello world"
    assert len(a.received) == 3


async def test_client_cancel_closes_the_upstream_stream(
    servers: Any, make_proxy: MakeProxy
) -> None:
    a = await servers("a")
    a.script += [endless_stream()]
    stub = await make_proxy([up(a)])
    call = stub.GenerateStream(request(), timeout=60)
    first = await call.read()
    assert isinstance(first, inference_pb2.GenerateChunk)
    call.cancel()
    await asyncio.wait_for(a.disconnected.wait(), 15)


def breaker_gauge(upstream: str) -> float | None:
    return REGISTRY.get_sample_value(
        "gearshift_proxy_breaker_state", {"model": "big", "upstream": upstream}
    )


async def test_breaker_opens_then_half_opens_and_closes(
    servers: Any, make_proxy: MakeProxy
) -> None:
    a, b = await servers("a"), await servers("b")
    a.script += [status(500), status(500)]
    stub = await make_proxy(
        [up(a), up(b, priority=1)], breaker={"failure_threshold": 2, "cooldown_s": 0.5}
    )
    for _ in range(2):
        assert (await stub.Generate(request(), timeout=10)).upstream == "b"
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    status_a = {u.name: u for u in info.upstreams}["a"]
    assert status_a.breaker == inference_pb2.BREAKER_STATE_OPEN
    assert status_a.consecutive_failures == 2
    assert breaker_gauge("a") == inference_pb2.BREAKER_STATE_OPEN
    # Open: a is skipped without being called.
    assert (await stub.Generate(request(), timeout=10)).upstream == "b"
    assert len(a.received) == 2
    await asyncio.sleep(0.6)  # the configured cool-down
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    assert {u.name: u for u in info.upstreams}["a"].breaker == inference_pb2.BREAKER_STATE_HALF_OPEN
    # The probe succeeds (a's script is empty now): closed again.
    assert (await stub.Generate(request(), timeout=10)).upstream == "a"
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    status_a = {u.name: u for u in info.upstreams}["a"]
    assert status_a.breaker == inference_pb2.BREAKER_STATE_CLOSED
    assert status_a.consecutive_failures == 0
    assert breaker_gauge("a") == inference_pb2.BREAKER_STATE_CLOSED


async def test_all_breakers_open_is_unavailable(servers: Any, make_proxy: MakeProxy) -> None:
    a = await servers("a")
    a.script += [status(500)]
    stub = await make_proxy([up(a)], breaker={"failure_threshold": 1, "cooldown_s": 30})
    for expected in ("HTTP 500", "circuit open"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert expected in (err.value.details() or "")
    assert len(a.received) == 1


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_a_frozen_upstream_fails_fast_opens_the_breaker_and_recovers(
    servers: Any, make_proxy: MakeProxy, streaming: bool
) -> None:
    """The drill's frozen upstream: bounded by first_byte_timeout_s, not the caller's deadline."""
    a = await servers("a")
    a.script += [slow(30), slow(30)]  # frozen: accepts the connection, says nothing
    stub = await make_proxy(
        [up(a, first_byte_timeout_s=0.5)],
        retry={"max_attempts": 1},
        breaker={"failure_threshold": 2, "cooldown_s": 1.0},
    )

    async def call() -> str:
        if not streaming:
            return (await stub.Generate(request(), timeout=20)).text
        chunks = [c.text_delta async for c in stub.GenerateStream(request(), timeout=20)]
        return "".join(chunks)

    loop = asyncio.get_running_loop()
    for _ in range(2):
        started = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call()
        assert loop.time() - started < 2.0, "the stall was not cut at the first-byte deadline"
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "first_byte_timeout_s" in (err.value.details() or "")
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    assert info.upstreams[0].breaker == inference_pb2.BREAKER_STATE_OPEN
    assert not info.ready, "an upstream that stopped answering must not look ready"
    await asyncio.sleep(1.1)  # the cooldown: the next request is the probe
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    assert info.ready
    assert await call() == "Hello world"  # the upstream answers again: first request recovers
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    assert info.upstreams[0].breaker == inference_pb2.BREAKER_STATE_CLOSED and info.ready


async def test_a_long_unary_answer_is_not_cut_at_the_first_byte_deadline(
    servers: Any, make_proxy: MakeProxy
) -> None:
    """first_byte_timeout_s bounds a stall, not how long a whole unary answer may take."""
    a = await servers("a")
    a.script += [paced(0.4)]  # starts at once, takes 1.6 s in all
    stub = await make_proxy([up(a, first_byte_timeout_s=0.5)], retry={"max_attempts": 1})
    started = time.perf_counter()
    reply = await stub.Generate(request(), timeout=20)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert (reply.text, reply.usage.total_tokens) == ("Hello world", 100)
    assert reply.finish_reason == common_pb2.FINISH_REASON_STOP
    assert len(a.received) == 1
    # The first token came at once; the answer took 1.6 s: TTFT is the first token's.
    assert 0 < reply.time_to_first_token_ms < elapsed_ms / 2


async def test_an_upstream_that_never_streams_answers_unary_and_streamed_calls(
    servers: Any, make_proxy: MakeProxy
) -> None:
    a = await servers("a")
    a.script += [never_streams(), never_streams()]
    stub = await make_proxy([up(a)])
    reply = await stub.Generate(request(), timeout=10)
    assert (reply.text, reply.usage.total_tokens) == ("Hello world", 100)
    chunks = [c async for c in stub.GenerateStream(request(), timeout=10)]
    assert "".join(c.text_delta for c in chunks) == "Hello world"
    assert chunks[-1].usage.total_tokens == 100
    assert chunks[-1].finish_reason == common_pb2.FINISH_REASON_STOP


async def test_request_rate_limit_is_resource_exhausted_with_retry_info(
    servers: Any, make_proxy: MakeProxy
) -> None:
    a = await servers("a")
    stub = await make_proxy([up(a)], rate_limits={"default": {"requests_per_minute": 2}})
    for _ in range(2):
        await stub.Generate(request("acme"), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(request("acme"), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    delay = retry_delay_s(err.value)
    assert delay is not None and 0 < delay <= 30
    assert "requests-per-minute" in (err.value.details() or "")
    assert len(a.received) == 2
    # Budgets are per tenant.
    assert (await stub.Generate(request("other"), timeout=10)).text == "Hello world"


async def test_token_rate_limit_counts_real_usage(servers: Any, make_proxy: MakeProxy) -> None:
    a = await servers("a")
    stub = await make_proxy(
        [up(a)],
        rate_limits={"default": {}, "tenants": {"small": {"tokens_per_minute": 100}}},
    )
    await stub.Generate(request("small"), timeout=10)  # the upstream reports 100 tokens
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(request("small"), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tokens-per-minute" in (err.value.details() or "")
    assert (retry_delay_s(err.value) or 0) > 0


async def test_usage_cost_in_response_and_metrics(servers: Any, make_proxy: MakeProxy) -> None:
    a = await servers("a")
    stub = await make_proxy([up(a)], price={"input_per_mtok": 3.0, "output_per_mtok": 15.0})
    labels = {"tenant": "billing-co", "model": "big"}
    before = REGISTRY.get_sample_value("gearshift_proxy_cost_usd_total", labels) or 0.0
    resp = await stub.Generate(request("billing-co"), timeout=10)
    expected = (50 * 3.0 + 50 * 15.0) / 1e6
    assert resp.usage.cost_usd == pytest.approx(expected)
    chunks = [c async for c in stub.GenerateStream(request("billing-co"), timeout=10)]
    assert chunks[-1].usage.cost_usd == pytest.approx(expected)
    after = REGISTRY.get_sample_value("gearshift_proxy_cost_usd_total", labels)
    assert after == pytest.approx(before + 2 * expected)
    tokens = REGISTRY.get_sample_value(
        "gearshift_proxy_tokens_total", {**labels, "kind": "completion"}
    )
    assert tokens == 100


async def test_key_from_file_is_sent_and_never_leaked(
    servers: Any, make_proxy: MakeProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "api-key"
    key_file.write_text(SECRET + "\n")
    a, b = await servers("a"), await servers("b")
    # A provider that echoes the key back in its error body, then returns garbage.
    a.script += [status(401, f"Incorrect API key provided: {SECRET}")]
    b.script += [status(500, f'{{"error": "bad key {SECRET}"}}')]
    stub = await make_proxy(
        [up(a, api_key_file=str(key_file)), up(b, api_key_file=str(key_file), priority=1)]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(request(), timeout=10)
    assert a.received[0].headers["Authorization"] == f"Bearer {SECRET}"
    details = err.value.details() or ""
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "HTTP 401" in details and "'a'" in details and "'b'" in details
    assert SECRET not in details
    assert SECRET not in str(err.value.trailing_metadata())
    assert SECRET not in caplog.text
    assert "[REDACTED]" in caplog.text or "[REDACTED]" in details
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    assert SECRET not in str(info)


async def test_key_from_env_and_missing_key_fails_over(
    servers: Any, make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROVIDER_KEY", SECRET)
    a, b = await servers("a"), await servers("b")
    missing = tmp_path / "not-mounted"
    stub = await make_proxy(
        [up(a, api_key_file=str(missing)), up(b, api_key_env="PROVIDER_KEY", priority=1)]
    )
    resp = await stub.Generate(request(), timeout=10)
    assert resp.upstream == "b"
    assert not a.received
    assert b.received[0].headers["Authorization"] == f"Bearer {SECRET}"


async def test_weights_share_traffic_within_a_priority(servers: Any, make_proxy: MakeProxy) -> None:
    a, b = await servers("a"), await servers("b")
    stub = await make_proxy([up(a, weight=3), up(b, weight=1)])
    for _ in range(60):
        await stub.Generate(request(), timeout=10)
    assert len(a.received) + len(b.received) == 60
    assert len(b.received) > 0
    assert len(a.received) > len(b.received)


async def test_bad_request_and_ambiguous_inputs(servers: Any, make_proxy: MakeProxy) -> None:
    a = await servers("a")
    stub = await make_proxy([up(a)])
    bad = request(temperature=3.0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(bad, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sampling.temperature" in (err.value.details() or "")
    no_model = request()
    no_model.model = ""
    assert (await stub.Generate(no_model, timeout=10)).model == "big"  # the only model
    assert not [r for r in a.received if r.body.get("temperature") == 3.0]


async def test_stream_deadline_closes_the_upstream_stream(
    servers: Any, make_proxy: MakeProxy
) -> None:
    a = await servers("a")
    a.script += [endless_stream()]
    stub = await make_proxy([up(a)])
    got = 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _chunk in stub.GenerateStream(request(), timeout=1.0):
            got += 1
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert got > 1
    await asyncio.wait_for(a.disconnected.wait(), 15)
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    assert info.load.running_requests == 0
