"""A broken embedder (or scorer) does not take the router down: `on_scoring_failure`.

The embedder is the only injected fault; the SLM server, the LLM proxy and the cache
are the session's real services.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from gearshift.router.embedding import QueryEmbedder
from gearshift.router.local import local_default_routes
from gearshift.v1 import common_pb2
from tests.router.conftest import RunningRouter, start_router, stop_router
from tests.router.test_router_e2e import AUTH_A, EASY, HARD, chat_request

pytestmark = pytest.mark.vllm


class CrashingEmbedder(QueryEmbedder):
    """What the router sees when its embedding model fails (out of memory, a bad build)."""

    async def embed(self, text: str) -> list[float]:
        raise RuntimeError("embedding model crashed")


async def _router(
    tmp: Any, slm_server: Any, proxy_server: Any, cache_server: Any, **overrides: Any
) -> RunningRouter:
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    running = await start_router(tmp, routes, cache_address=cache_server.address, **overrides)
    running.app.pipeline.embedder = CrashingEmbedder()
    return running


async def test_default_answers_on_the_small_tier_without_the_cache(
    slm_server: Any, proxy_server: Any, cache_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = await _router(
        tmp_path_factory.mktemp("router-no-embed"), slm_server, proxy_server, cache_server
    )
    try:
        reply = await running.stub.Chat(chat_request(HARD), metadata=AUTH_A, timeout=120)
        assert reply.text.strip()
        d = reply.decision
        assert d.tier == common_pb2.TIER_SLM, d
        assert d.cache == common_pb2.CACHE_OUTCOME_BYPASS
        assert any("embedding failed" in r for r in d.reasons), d.reasons
    finally:
        await stop_router(running)


async def test_llm_policy_sends_unscored_queries_to_the_large_tier(
    slm_server: Any, proxy_server: Any, cache_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = await _router(
        tmp_path_factory.mktemp("router-no-embed-llm"),
        slm_server,
        proxy_server,
        cache_server,
        on_scoring_failure="llm",
    )
    try:
        decision = await running.stub.Route(chat_request(EASY), metadata=AUTH_A, timeout=30)
        assert decision.tier == common_pb2.TIER_LLM, decision
    finally:
        await stop_router(running)


async def test_refuse_policy_answers_unavailable_with_the_reason(
    slm_server: Any, proxy_server: Any, cache_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = await _router(
        tmp_path_factory.mktemp("router-no-embed-refuse"),
        slm_server,
        proxy_server,
        cache_server,
        on_scoring_failure="refuse",
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.stub.Route(chat_request(EASY), metadata=AUTH_A, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "on_scoring_failure" in (err.value.details() or "")
    finally:
        await stop_router(running)
