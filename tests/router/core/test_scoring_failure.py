"""A broken embedder (or scorer) does not take the router down: `on_scoring_failure`.

The embedder is the only injected fault; the SLM server, the LLM proxy and the cache
are the session's real services.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gearshift.router.core.embedding import QueryEmbedder
from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2
from tests.router.conftest import RunningRouter, start_router, stop_router
from tests.router.test_router_e2e import AUTH_A, EASY, HARD, chat_request

pytestmark = pytest.mark.vllm


class CrashingEmbedder(QueryEmbedder):
    """What the router sees when its embedding model fails (out of memory, a bad build)."""

    async def embed(self, text: str) -> list[float]:
        raise RuntimeError("embedding model crashed")


@contextlib.asynccontextmanager
async def crashing_embedder_router(
    tmp: Path, slm_server: Any, proxy_server: Any, cache_server: Any, **overrides: Any
) -> AsyncIterator[RunningRouter]:
    """A router over the real services whose embedder fails on every query."""
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    running = await start_router(tmp, routes, cache_address=cache_server.address, **overrides)
    running.app.pipeline.embedder = CrashingEmbedder()
    try:
        yield running
    finally:
        await stop_router(running)


async def test_default_answers_on_the_small_tier_without_the_cache(
    slm_server: Any, proxy_server: Any, cache_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("router-no-embed")
    async with crashing_embedder_router(tmp, slm_server, proxy_server, cache_server) as router:
        reply = await router.stub.Chat(chat_request(HARD), metadata=AUTH_A, timeout=120)
    assert reply.text.strip()
    d = reply.decision
    assert d.tier == common_pb2.TIER_SLM, d
    assert d.cache == common_pb2.CACHE_OUTCOME_BYPASS
    assert any("embedding failed" in r for r in d.reasons), d.reasons


async def test_llm_policy_sends_unscored_queries_to_the_large_tier(
    slm_server: Any, proxy_server: Any, cache_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("router-no-embed-llm")
    async with crashing_embedder_router(
        tmp, slm_server, proxy_server, cache_server, on_scoring_failure="llm"
    ) as router:
        decision = await router.stub.Route(chat_request(EASY), metadata=AUTH_A, timeout=30)
    assert decision.tier == common_pb2.TIER_LLM, decision


async def test_refuse_policy_answers_unavailable_with_the_reason(
    slm_server: Any, proxy_server: Any, cache_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("router-no-embed-refuse")
    async with crashing_embedder_router(
        tmp, slm_server, proxy_server, cache_server, on_scoring_failure="refuse"
    ) as router:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router.stub.Route(chat_request(EASY), metadata=AUTH_A, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "on_scoring_failure" in (err.value.details() or "")
