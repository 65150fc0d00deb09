"""The router end to end: real SLM server (vLLM), real LLM proxy over a real vLLM server,
real cache, all over loopback gRPC; plus the OpenAI-compatible HTTP API via the `openai` SDK."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import grpc
import httpx
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2, router_pb2
from tests.router.conftest import (
    KEY_A,
    KEY_B,
    LLM_ROUTE,
    SLM_ROUTE,
    RunningRouter,
    dead_address,
    start_router,
    stop_router,
    write_routes,
)

pytestmark = pytest.mark.vllm

EASY = "Hi!"
HARD = (
    "Every day, Wendi feeds each of her chickens three cups of mixed chicken feed, containing "
    "seeds, mealworms and vegetables to help keep them healthy.  She gives the chickens their "
    "feed in three separate meals. In the morning, she gives her flock of chickens 15 cups of "
    "feed.  In the afternoon, she gives her chickens another 25 cups of feed.  How many cups of "
    "feed does she need to give her chickens in the final meal of the day if the size of "
    "Wendi's flock is 20 chickens?"
)
AUTH_A = [("authorization", f"Bearer {KEY_A}")]


def chat_request(
    text: str,
    *,
    max_tokens: int = 12,
    temperature: float | None = 0.0,
    model: str = "auto",
    policy: router_pb2.CachePolicy.ValueType = router_pb2.CACHE_POLICY_UNSPECIFIED,
) -> router_pb2.ChatRequest:
    sampling = common_pb2.SamplingParams(max_tokens=max_tokens)
    if temperature is not None:
        sampling.temperature = temperature
    return router_pb2.ChatRequest(
        model=model,
        messages=[common_pb2.ChatMessage(role="user", content=text)],
        sampling=sampling,
        cache_policy=policy,
    )


def answered(tier: str) -> float:
    """Requests the router's metrics counted as answered by a tier (all tenants, routes)."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "gearshift_router_requests":
            total += sum(
                s.value
                for s in metric.samples
                if s.name.endswith("_total") and s.labels.get("tier") == tier
            )
    return total


def unique(text: str) -> str:
    return f"{text} (ref {uuid.uuid4().hex[:8]})"


async def test_easy_question_goes_to_slm_and_hard_one_to_large_tier(
    router: RunningRouter,
) -> None:
    # Read the real scorer's difficulties with dry runs, then pin the threshold between
    # them so the test is deterministic whatever the calibration says.
    easy = await router.stub.Route(chat_request(EASY), metadata=AUTH_A, timeout=30)
    hard = await router.stub.Route(chat_request(HARD), metadata=AUTH_A, timeout=30)
    assert 0.0 <= easy.difficulty < hard.difficulty <= 1.0
    pipeline = router.app.pipeline
    original = pipeline.config
    pipeline.config = dataclasses.replace(
        original, difficulty_threshold=(easy.difficulty + hard.difficulty) / 2
    )
    try:
        policy = router_pb2.CACHE_POLICY_BYPASS
        small = await router.stub.Chat(
            chat_request(EASY, policy=policy), metadata=AUTH_A, timeout=120
        )
        large = await router.stub.Chat(
            chat_request(HARD, policy=policy), metadata=AUTH_A, timeout=120
        )
    finally:
        pipeline.config = original
    assert small.decision.route == SLM_ROUTE and small.decision.tier == common_pb2.TIER_SLM
    assert large.decision.route == LLM_ROUTE and large.decision.tier == common_pb2.TIER_LLM
    for response in (small, large):
        assert response.text.strip()
        assert response.usage.completion_tokens > 0
        assert len(response.trace_id) == 32
        assert not response.decision.escalated_from
        assert response.decision.cache == common_pb2.CACHE_OUTCOME_BYPASS
    assert any("threshold" in r for r in large.decision.reasons)


async def test_repeat_is_served_from_the_cache(router: RunningRouter) -> None:
    # Only complete answers are cached: use the first question the model answers in full.
    for prompt in ("What colour is grass?", "Say hello.", "What is 1 + 1?", "Name a colour."):
        question = unique(prompt)
        first = await router.stub.Chat(
            chat_request(question, max_tokens=64), metadata=AUTH_A, timeout=120
        )
        assert first.decision.cache == common_pb2.CACHE_OUTCOME_MISS
        if first.finish_reason == common_pb2.FINISH_REASON_STOP:
            break
    assert first.finish_reason == common_pb2.FINISH_REASON_STOP
    assert router.app.cache is not None
    await router.app.cache.drain()
    hits_before = answered("cache")
    second = await router.stub.Chat(
        chat_request(question, max_tokens=64), metadata=AUTH_A, timeout=30
    )
    assert second.decision.tier == common_pb2.TIER_CACHE
    assert answered("cache") == hits_before + 1  # the route-mix metric saw the hit
    assert second.decision.route == "cache"
    assert second.decision.cache in (
        common_pb2.CACHE_OUTCOME_HIT_EXACT,
        common_pb2.CACHE_OUTCOME_HIT_SEMANTIC,
    )
    assert second.text == first.text
    assert second.usage.completion_tokens == 0  # no model was called
    # Tenants never see each other's entries.
    other = await router.stub.Route(
        chat_request(question, max_tokens=64),
        metadata=[("authorization", f"Bearer {KEY_B}")],
        timeout=30,
    )
    assert other.cache == common_pb2.CACHE_OUTCOME_MISS
    # A sampled generation (temperature unset = 1.0) bypasses the cache.
    sampled = await router.stub.Route(
        chat_request(question, temperature=None), metadata=AUTH_A, timeout=30
    )
    assert sampled.cache == common_pb2.CACHE_OUTCOME_BYPASS
    # A hit streams too: one chunk with the decision, the text and the finish reason.
    chunks = [
        c
        async for c in router.stub.ChatStream(
            chat_request(question, max_tokens=64), metadata=AUTH_A, timeout=30
        )
    ]
    assert chunks[0].decision.tier == common_pb2.TIER_CACHE
    assert "".join(c.text_delta for c in chunks) == first.text
    # Another max_tokens is another context (it can change the answer): a miss.
    shorter = await router.stub.Route(
        chat_request(question, max_tokens=12), metadata=AUTH_A, timeout=30
    )
    assert shorter.cache == common_pb2.CACHE_OUTCOME_MISS


async def test_unknown_or_missing_key_is_refused(router: RunningRouter) -> None:
    for metadata in ([("authorization", "Bearer not-a-key")], []):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await router.stub.Chat(chat_request(EASY), metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in router.stub.ChatStream(chat_request(EASY), metadata=metadata):
                pass
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    client = openai.AsyncOpenAI(base_url=router.http_base, api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as http_info:
        await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": EASY}]
        )
    assert http_info.value.status_code == 401
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{router.http_base}/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": EASY}]},
        )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


async def test_bad_request_and_unknown_model(router: RunningRouter) -> None:
    bad = chat_request(EASY)
    bad.messages[0].role = "wizard"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.stub.Chat(bad, metadata=AUTH_A, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[0].role" in (info.value.details() or "")
    # An unknown model is NOT_FOUND: never answered by another model.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.stub.Chat(chat_request(EASY, model="gpt-9"), metadata=AUTH_A, timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    client = openai.AsyncOpenAI(base_url=router.http_base, api_key=KEY_A, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": EASY}]
        )
    with pytest.raises(openai.BadRequestError) as bad_info:
        await client.chat.completions.create(
            model="auto", messages=[{"role": "wizard", "content": EASY}]
        )
    assert bad_info.value.status_code == 400


async def test_pinned_model_is_answered_by_that_route(router: RunningRouter) -> None:
    response = await router.stub.Chat(
        chat_request(unique("Say yes."), model=LLM_ROUTE, max_tokens=4),
        metadata=AUTH_A,
        timeout=120,
    )
    assert response.decision.route == LLM_ROUTE
    assert any("pinned" in r for r in response.decision.reasons)


async def test_openai_sdk_chat_and_streaming(router: RunningRouter) -> None:
    client = openai.AsyncOpenAI(base_url=router.http_base, api_key=KEY_A, max_retries=0)
    models = await client.models.list()
    ids = [m.id for m in models.data]
    assert "auto" in ids and SLM_ROUTE in ids and LLM_ROUTE in ids

    raw = await client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": unique("What is 2 + 2?")}],
        temperature=0,
        max_tokens=12,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-gearshift-route"] in (SLM_ROUTE, LLM_ROUTE)
    assert raw.headers["x-gearshift-tier"] in ("slm", "llm")
    assert raw.headers["x-gearshift-cache"] == "miss"
    assert len(raw.headers["x-gearshift-trace-id"]) == 32
    float(raw.headers["x-gearshift-difficulty"])

    stream = await client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": unique("Count to three.")}],
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(text).strip()
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0


async def test_grpc_stream_first_chunk_carries_the_decision(router: RunningRouter) -> None:
    chunks = [
        c
        async for c in router.stub.ChatStream(
            chat_request(unique("Name a fruit."), policy=router_pb2.CACHE_POLICY_BYPASS),
            metadata=AUTH_A,
            timeout=120,
        )
    ]
    assert chunks[0].HasField("decision") and chunks[0].decision.route
    assert len(chunks[0].trace_id) == 32
    assert all(not c.HasField("decision") for c in chunks[1:])
    assert chunks[-1].finish_reason in (
        common_pb2.FINISH_REASON_STOP,
        common_pb2.FINISH_REASON_LENGTH,
    )
    assert "".join(c.text_delta for c in chunks).strip()


async def test_dead_slm_escalates_without_client_errors(
    slm_server: Any, proxy_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    routes = local_default_routes(
        dead_address(), slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    # Everything counts as easy: every request first goes to the (dead) SLM route.
    running = await start_router(
        tmp_path_factory.mktemp("router-dead-slm"), routes, difficulty_threshold=1.0
    )
    try:
        policy = router_pb2.CACHE_POLICY_BYPASS
        # Right after start (before any health poll could notice) and later (breaker or
        # health known): neither the unary nor the streaming client sees an error.
        responses = await asyncio.gather(
            *(
                running.stub.Chat(
                    chat_request(unique("Hello"), policy=policy, max_tokens=4),
                    metadata=AUTH_A,
                    timeout=120,
                )
                for _ in range(3)
            )
        )
        chunks = [
            c
            async for c in running.stub.ChatStream(
                chat_request(EASY, policy=policy, max_tokens=4), metadata=AUTH_A, timeout=120
            )
        ]
        decisions = [r.decision for r in responses] + [chunks[0].decision]
        for decision in decisions:
            assert decision.route == LLM_ROUTE and decision.tier == common_pb2.TIER_LLM
            assert SLM_ROUTE in decision.escalated_from or any(
                f"skipped {SLM_ROUTE}" in r for r in decision.reasons
            )
        assert all(r.text for r in responses)
        # Pinning the dead route is an error, never an answer from another model.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await running.stub.Chat(
                chat_request(EASY, model=SLM_ROUTE, policy=policy), metadata=AUTH_A, timeout=30
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await stop_router(running)


async def test_routing_table_change_applies_while_requests_are_in_flight(
    slm_server: Any, proxy_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    running = await start_router(
        tmp_path_factory.mktemp("router-reload"), routes, difficulty_threshold=1.0
    )
    try:
        policy = router_pb2.CACHE_POLICY_BYPASS

        async def one(i: int) -> router_pb2.ChatResponse:
            return await running.stub.Chat(
                chat_request(f"Say the number {i}.", policy=policy, max_tokens=16),
                metadata=AUTH_A,
                timeout=180,
            )

        async def one_stream(i: int) -> list[router_pb2.ChatStreamChunk]:
            return [
                c
                async for c in running.stub.ChatStream(
                    chat_request(f"Spell the number {i}.", policy=policy, max_tokens=16),
                    metadata=AUTH_A,
                    timeout=180,
                )
            ]

        before = running.app.table.snapshot.version
        in_flight = [asyncio.ensure_future(one(i)) for i in range(4)]
        in_flight += [asyncio.ensure_future(one_stream(i)) for i in range(2)]
        await asyncio.sleep(0.2)
        # The new table renames the SLM route and drops the old one.
        changed = [dict(r) for r in routes]
        changed[0] = {**routes[0], "metadata": {"name": "slm-v2"}}
        write_routes(running.routes_file, changed)
        for _ in range(100):
            if running.app.table.snapshot.version > before:
                break
            await asyncio.sleep(0.05)
        assert running.app.table.snapshot.find("slm-v2") is not None
        assert running.app.table.snapshot.find(SLM_ROUTE) is None
        results = await asyncio.gather(*in_flight)  # none of them failed
        for result in results:
            if isinstance(result, list):
                assert result[-1].finish_reason != common_pb2.FINISH_REASON_ERROR
            else:
                assert result.text
        after = await one(99)
        assert after.decision.route == "slm-v2"
    finally:
        await stop_router(running)


async def test_one_request_is_one_trace_across_router_cache_and_backend(
    router: RunningRouter, span_exporter: InMemorySpanExporter
) -> None:
    response = await router.stub.Chat(
        chat_request(unique("What colour is the sky?"), max_tokens=48),
        metadata=AUTH_A,
        timeout=120,
    )
    assert router.app.cache is not None
    await router.app.cache.drain()
    trace_id = int(response.trace_id, 16)

    def spans() -> list[Any]:
        return [s for s in span_exporter.get_finished_spans() if s.context.trace_id == trace_id]

    def named(suffix: str, kind: SpanKind) -> list[Any]:
        return [s for s in spans() if s.name.endswith(suffix) and s.kind == kind]

    hops = ["CacheService/Lookup", "InferenceService/Generate"]
    if response.finish_reason == common_pb2.FINISH_REASON_STOP:
        hops.append("CacheService/Store")  # only complete answers are stored
    for _ in range(100):  # server spans end just after the responses were sent
        if all(named(n, k) for n in hops for k in (SpanKind.CLIENT, SpanKind.SERVER)):
            break
        await asyncio.sleep(0.05)
    by_id = {s.context.span_id: s for s in spans()}
    roots = [s for s in by_id.values() if s.parent is None]
    assert len(roots) == 1 and roots[0].name.endswith("RouterService/Chat")
    root = roots[0]
    assert root.kind == SpanKind.SERVER

    def ancestors(span: Any) -> list[Any]:
        out = []
        while span.parent is not None:
            span = by_id[span.parent.span_id]  # KeyError: a parent outside this trace
            out.append(span)
        return out

    names = sorted(s.name for s in by_id.values())
    for suffix in hops:
        clients, servers = named(suffix, SpanKind.CLIENT), named(suffix, SpanKind.SERVER)
        assert len(clients) == 1 and len(servers) == 1, (suffix, names)
        client, server = clients[0], servers[0]
        assert server.parent.span_id == client.context.span_id
        assert root in ancestors(client)
    (model_span,) = [s for s in by_id.values() if s.name.startswith("chat ")]
    assert model_span.attributes["gen_ai.request.model"]
    assert model_span.parent.span_id == root.context.span_id
    # Prompts stay out of traces by default.
    question_attrs = [s for s in by_id.values() if "gearshift.question" in (s.attributes or {})]
    assert not question_attrs


async def test_cancelling_the_client_aborts_the_backend_generation(
    router: RunningRouter, slm_server: Any
) -> None:
    load = slm_server.engine.load

    def aborted() -> int:
        return sum(load.aborted_total.values())

    long_story = chat_request(
        unique("Write a very long story about a dragon and a lighthouse."),
        model=SLM_ROUTE,
        max_tokens=1500,
        policy=router_pb2.CACHE_POLICY_BYPASS,
    )
    # gRPC: cancel the stream after the first text arrived.
    before = aborted()
    call = router.stub.ChatStream(long_story, metadata=AUTH_A, timeout=120)
    async for chunk in call:
        if chunk.text_delta:
            break
    call.cancel()
    for _ in range(200):
        if aborted() > before:
            break
        await asyncio.sleep(0.05)
    assert aborted() > before, "the SLM kept generating for a cancelled client"

    # HTTP: the client closes the SSE connection.
    before = aborted()
    body = {
        "model": SLM_ROUTE,
        "messages": [{"role": "user", "content": long_story.messages[0].content}],
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
    }
    headers = {"authorization": f"Bearer {KEY_A}", "x-gearshift-cache-policy": "bypass"}
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream(
            "POST", f"{router.http_base}/chat/completions", json=body, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-gearshift-route"] == SLM_ROUTE
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"content": "' in line:
                break
    for _ in range(200):
        if aborted() > before:
            break
        await asyncio.sleep(0.05)
    assert aborted() > before, "closing the HTTP stream did not abort the generation"


async def test_cascade_asks_the_large_tier_when_the_slm_is_unsure(
    slm_server: Any, proxy_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    # The estimator's `escalate` is a probability, so with threshold 0 every SLM answer cascades.
    running = await start_router(
        tmp_path_factory.mktemp("router-cascade"),
        routes,
        difficulty_threshold=1.0,
        cascade=True,
        cascade_threshold=0.0,
    )
    try:
        response = await running.stub.Chat(
            chat_request(EASY, policy=router_pb2.CACHE_POLICY_BYPASS, max_tokens=8),
            metadata=AUTH_A,
            timeout=120,
        )
        assert response.decision.route == LLM_ROUTE
        assert list(response.decision.escalated_from) == [SLM_ROUTE]
        assert any(r.startswith("cascade:") for r in response.decision.reasons)
        assert response.text
        assert response.usage.completion_tokens > 0
    finally:
        await stop_router(running)
