"""The proxy in front of the real vLLM OpenAI-compatible server (the small model)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from gearshift.runtime.telemetry import insecure_channel
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from tests.fixtures.proxy import ProxyServer

pytestmark = pytest.mark.vllm

QUESTION = "Name three colours of the rainbow."


@pytest.fixture
async def stub(proxy_server: ProxyServer) -> AsyncIterator[inference_pb2_grpc.InferenceServiceStub]:
    async with insecure_channel(proxy_server.address) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def greedy(model: str, max_tokens: int = 32, **sampling: object) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(
        tenant="acme",
        model=model,
        messages=[common_pb2.ChatMessage(role="user", content=QUESTION)],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, **sampling),  # type: ignore[arg-type]
    )


async def test_unary_answer_with_usage(
    stub: inference_pb2_grpc.InferenceServiceStub, proxy_server: ProxyServer
) -> None:
    resp = await stub.Generate(greedy(proxy_server.served_model), timeout=120)
    assert resp.text.strip()
    assert resp.model == proxy_server.served_model
    assert resp.upstream == "local-vllm"
    assert resp.request_id
    assert resp.finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)
    assert resp.usage.prompt_tokens > 0
    assert 0 < resp.usage.completion_tokens <= 32
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


async def test_stream_is_relayed_chunk_by_chunk_and_matches_unary(
    stub: inference_pb2_grpc.InferenceServiceStub, proxy_server: ProxyServer
) -> None:
    request = greedy(proxy_server.served_model)
    unary = await stub.Generate(request, timeout=120)
    chunks = [c async for c in stub.GenerateStream(request, timeout=120)]
    with_text = [c for c in chunks if c.text_delta]
    assert len(with_text) >= 3, "the answer must arrive in several pieces, not one"
    assert "".join(c.text_delta for c in chunks) == unary.text
    assert chunks[0].upstream == "local-vllm"
    last = chunks[-1]
    assert last.finish_reason == unary.finish_reason
    assert last.usage.completion_tokens == unary.usage.completion_tokens
    assert last.usage.prompt_tokens == unary.usage.prompt_tokens
    assert all(c.finish_reason == common_pb2.FINISH_REASON_UNSPECIFIED for c in chunks[:-1])


async def test_max_tokens_and_logprobs_are_passed_through(
    stub: inference_pb2_grpc.InferenceServiceStub, proxy_server: ProxyServer
) -> None:
    resp = await stub.Generate(
        greedy(proxy_server.served_model, max_tokens=4, logprobs=True, top_logprobs=2),
        timeout=120,
    )
    assert resp.finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert resp.usage.completion_tokens == 4
    assert len(resp.logprobs) == 4
    assert all(len(lp.top) == 2 and lp.logprob <= 0 for lp in resp.logprobs)


async def test_unknown_model_is_not_found(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(greedy("gpt-99"), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "gpt-99" in (err.value.details() or "")


async def test_model_info_lists_upstream_health(
    stub: inference_pb2_grpc.InferenceServiceStub, proxy_server: ProxyServer
) -> None:
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=10)
    assert info.model == proxy_server.served_model
    assert info.backend == "openai-proxy"
    assert info.ready
    assert [u.name for u in info.upstreams] == ["local-vllm"]
    assert info.upstreams[0].breaker == inference_pb2.BREAKER_STATE_CLOSED
