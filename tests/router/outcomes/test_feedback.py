"""Outcome feedback through both APIs, against the real SLM server, proxy and cache.

Each answer the router generates carries a response id (the OpenAI API's `chatcmpl-`
id); feedback keyed by it is stored once per answer, per tenant, and survives a restart
of the router. In a cluster the store is PostgreSQL, shared by every replica.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import openai
import pytest

from gearshift.learn.outcomes.labels import outcome_labels
from gearshift.router.outcomes.records import prompt_digest
from gearshift.router.scorer import load_default_scorer
from gearshift.router.scorer.prompt_features import prompt_features
from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2, router_pb2
from tests.router.conftest import KEY_A, KEY_B, RunningRouter, start_router, stop_router
from tests.router.test_router_e2e import AUTH_A, EASY, chat_request, unique

pytestmark = pytest.mark.vllm

AUTH_B = [("authorization", f"Bearer {KEY_B}")]
BYPASS = router_pb2.CACHE_POLICY_BYPASS


def routes_of(slm_server: Any, proxy_server: Any) -> list[dict[str, Any]]:
    return local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )


async def expect_code(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value
    return info.value.details() or ""


async def test_grpc_feedback_round_trip_and_errors(router: RunningRouter) -> None:
    reply = await router.stub.Chat(
        chat_request(unique(EASY), policy=BYPASS), metadata=AUTH_A, timeout=120
    )
    response_id = reply.decision.response_id
    assert len(response_id) == 32, reply.decision
    stored = await router.stub.Feedback(
        router_pb2.FeedbackRequest(response_id=response_id, score=0.25, other_tier_better=True),
        metadata=AUTH_A,
        timeout=10,
    )
    assert stored.score == 0.25
    assert (stored.tier, stored.route) == (reply.decision.tier, reply.decision.route)
    again = router_pb2.FeedbackRequest(response_id=response_id, good=True)
    details = await expect_code(
        router.stub.Feedback(again, metadata=AUTH_A, timeout=10), grpc.StatusCode.ALREADY_EXISTS
    )
    assert "already" in details
    # Another tenant cannot see (or rate) the answer: it does not exist for them.
    await expect_code(
        router.stub.Feedback(again, metadata=AUTH_B, timeout=10), grpc.StatusCode.NOT_FOUND
    )
    await expect_code(
        router.stub.Feedback(
            router_pb2.FeedbackRequest(response_id="0" * 32, score=1.0), metadata=AUTH_A, timeout=10
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    details = await expect_code(
        router.stub.Feedback(
            router_pb2.FeedbackRequest(response_id=response_id, score=1.5),
            metadata=AUTH_A,
            timeout=10,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "score" in details
    # The stored outcome is joined with its decision, as retraining reads it.
    assert router.app.outcomes is not None
    rows = await router.app.outcomes.store.labelled()
    row = next(r for r in rows if r.decision.response_id == response_id)
    assert row.decision.tenant == "tenant-a" and row.outcome.other_tier_better
    assert row.decision.embedding_vector().shape == (384,)
    assert row.decision.prompt.startswith(EASY)


async def test_dry_runs_and_cache_hits_carry_no_response_id(router: RunningRouter) -> None:
    decision = await router.stub.Route(chat_request(unique(EASY)), metadata=AUTH_A, timeout=30)
    assert decision.response_id == ""


async def test_openai_feedback_round_trip(router: RunningRouter) -> None:
    client = openai.AsyncOpenAI(base_url=router.http_base, api_key=KEY_A, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": unique(EASY)}],
        max_tokens=8,
        temperature=0,
    )
    completion = raw.parse()
    assert completion.id == f"chatcmpl-{raw.headers['x-gearshift-response-id']}"
    stream = await client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": unique(EASY)}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    stream_ids = {chunk.id async for chunk in stream}
    assert len(stream_ids) == 1
    (stream_id,) = stream_ids
    url = f"{router.http_base}/feedback"
    a, b = {"authorization": f"Bearer {KEY_A}"}, {"authorization": f"Bearer {KEY_B}"}
    async with httpx.AsyncClient(timeout=10) as http:
        ok = await http.post(url, headers=a, json={"id": completion.id, "rating": "bad"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["score"] == 0.0 and ok.json()["id"] == completion.id
        assert (
            await http.post(url, headers=a, json={"id": completion.id, "score": 1})
        ).status_code == 409
        assert (
            await http.post(url, headers=b, json={"id": stream_id, "score": 1})
        ).status_code == 404
        bad = await http.post(url, headers=a, json={"id": stream_id, "score": -0.1})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"
        bad = await http.post(url, headers=a, json={"id": stream_id, "score": "high"})
        assert bad.status_code == 400
        streamed = await http.post(
            url, headers=a, json={"id": stream_id, "score": 0.9, "comment": "fine"}
        )
        assert streamed.status_code == 200, streamed.text
        assert (await http.post(url, json={"id": stream_id, "score": 1})).status_code == 401


async def test_feedback_survives_a_router_restart(
    slm_server: Any, proxy_server: Any, tmp_path: Path
) -> None:
    first = await start_router(tmp_path, routes_of(slm_server, proxy_server))
    try:
        reply = await first.stub.Chat(chat_request(unique(EASY)), metadata=AUTH_A, timeout=120)
    finally:
        await stop_router(first)  # queued decisions are written on the way down
    second = await start_router(tmp_path, routes_of(slm_server, proxy_server))
    try:
        stored = await second.stub.Feedback(
            router_pb2.FeedbackRequest(response_id=reply.decision.response_id, good=True),
            metadata=AUTH_A,
            timeout=10,
        )
    finally:
        await stop_router(second)
    assert stored.score == 1.0 and stored.tier == reply.decision.tier != common_pb2.TIER_CACHE


async def test_postgres_store_is_shared_by_replicas(
    slm_server: Any, proxy_server: Any, postgres_url: str, tmp_path: Path
) -> None:
    routes = routes_of(slm_server, proxy_server)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = await start_router(tmp_path / "one", routes, outcomes_postgres_url=postgres_url)
    two = await start_router(tmp_path / "two", routes, outcomes_postgres_url=postgres_url)
    try:
        reply = await one.stub.Chat(chat_request(unique(EASY)), metadata=AUTH_A, timeout=120)
        stored = await two.stub.Feedback(
            router_pb2.FeedbackRequest(response_id=reply.decision.response_id, score=0.5),
            metadata=AUTH_A,
            timeout=10,
        )
        assert stored.route == reply.decision.route
        await expect_code(
            one.stub.Feedback(
                router_pb2.FeedbackRequest(response_id=reply.decision.response_id, score=0.1),
                metadata=AUTH_A,
                timeout=10,
            ),
            grpc.StatusCode.ALREADY_EXISTS,
        )
    finally:
        await stop_router(one)
        await stop_router(two)
    assert not (tmp_path / "one" / "outcomes").exists()  # nothing went to SQLite


async def test_digest_only_router_stores_what_retraining_needs_without_the_text(
    slm_server: Any, proxy_server: Any, tmp_path: Path
) -> None:
    """With outcomes_keep_prompt_text off, the question is stored as its sha256 plus the
    scorer's prompt features: from the stored row the router's own difficulty is
    reproduced exactly, so `gearshift scorer train --outcomes` learns from what the
    router saw instead of from an empty prompt."""
    router = await start_router(
        tmp_path, routes_of(slm_server, proxy_server), outcomes_keep_prompt_text=False
    )
    question = unique("Write a haiku about the sea.")
    try:
        reply = await router.stub.Chat(
            chat_request(question, policy=BYPASS), metadata=AUTH_A, timeout=120
        )
        await router.stub.Feedback(
            router_pb2.FeedbackRequest(response_id=reply.decision.response_id, good=False),
            metadata=AUTH_A,
            timeout=10,
        )
        assert router.app.outcomes is not None
        rows = await router.app.outcomes.store.labelled()
    finally:
        await stop_router(router)
    (row,) = [r for r in rows if r.decision.response_id == reply.decision.response_id]
    assert row.decision.prompt == "" and row.decision.prompt_digest == prompt_digest(question)
    labels = outcome_labels([row])
    assert len(labels) == 1 and labels.without_features == 0
    np.testing.assert_array_equal(labels.features[0], prompt_features(question))
    again = load_default_scorer().score_features(labels.embeddings, labels.features)[0]
    assert again == pytest.approx(reply.decision.difficulty, abs=1e-5)
