"""Answers from data sources, end to end: real retriever, real small model, real cache.

The router runs over the session's SLM server (vLLM), LLM proxy and cache, plus the
session's `gearshift serve retriever`. Documents are ingested over the retriever's own
gRPC API; the routes file declares the sources as DataSource documents beside the
ModelRoutes, exactly as `gearshift up` writes it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc, router_pb2
from tests.router.conftest import KEY_A, RunningRouter, dead_address, start_router, stop_router
from tests.router.table.test_per_pod_routing import _in_process_generations

AUTH = (("authorization", f"Bearer {KEY_A}"),)
HTTP_AUTH = {"authorization": f"Bearer {KEY_A}"}
QUESTION = "How do I set the cache's maximum false-hit rate?"
HANDBOOK = """# Cache

The semantic cache answers repeated questions from earlier answers.

## Settings

Set max_false_hit_rate to bound the share of wrong cache hits; the default is 0.02.
"""
HANDBOOK_V2 = HANDBOOK.replace("the default is 0.02", "the default is 0.01")

pytestmark = pytest.mark.vllm


def _source(name: str, description: str, endpoint: str, examples: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "gearshift.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": name},
        "spec": {
            "description": description,
            "examples": examples,
            "retriever": {"endpoint": endpoint},
            "search": {"topK": 2},
        },
    }


async def _ingest(endpoint: str, source: str, text: str) -> str:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = retriever_pb2_grpc.RetrieverServiceStub(channel)

        async def docs() -> AsyncIterator[retriever_pb2.IngestDocument]:
            yield retriever_pb2.IngestDocument(source=source, document_id="cache.md", text=text)

        response = await stub.Ingest(docs(), timeout=120)
    assert [r.status for r in response.results] != ["failed"], response
    return response.content_version


def _ask(
    question: str, model: str = "auto", max_tokens: int = 24, **kw: Any
) -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        model=model,
        messages=[common_pb2.ChatMessage(role="user", content=question)],
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens),
        **kw,
    )


def _routes(slm_server: Any, proxy_server: Any, retriever: str, handbook: str) -> list[Any]:
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    routes += [
        _source(
            handbook,
            "Gearshift's handbook: how to configure and operate the semantic cache",
            retriever,
            ["How do I configure the cache's similarity threshold?"],
        ),
        _source(
            "runbooks",
            "Runbooks of the platform team: what to do when a GPU node goes down",
            dead_address(),  # nothing listens: the source's backend is down
            ["The GPU node is down, what is the procedure?"],
        ),
    ]
    return routes


@pytest.fixture(scope="module")
async def handbook(retriever_endpoint: str) -> str:
    name = f"handbook-{uuid.uuid4().hex[:8]}"
    await _ingest(retriever_endpoint, name, HANDBOOK)
    return name


@pytest.fixture(scope="module")
async def sources_router(
    slm_server: Any,
    proxy_server: Any,
    cache_server: Any,
    retriever_endpoint: str,
    handbook: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[RunningRouter, str]]:
    tmp: Path = tmp_path_factory.mktemp("sources-router")
    running = await start_router(
        tmp,
        _routes(slm_server, proxy_server, retriever_endpoint, handbook),
        cache_address=cache_server.address,
        source_timeout_s=1.0,
    )
    try:
        yield running, handbook
    finally:
        await stop_router(running)


async def test_a_grounded_answer_cites_its_passages(
    sources_router: tuple[RunningRouter, str],
) -> None:
    router, handbook = sources_router
    policy = router_pb2.CACHE_POLICY_BYPASS
    response = await router.stub.Chat(
        _ask(QUESTION, cache_policy=policy), metadata=AUTH, timeout=120
    )
    d = response.decision
    assert d.source == handbook, d.reasons
    assert d.candidates[0].name == handbook and d.candidates[0].kind == "source"
    assert {c.name for c in d.candidates} == {handbook, "runbooks"}
    assert d.selection_reason.startswith(f"selected source {handbook}")
    assert d.route in ("local-slm", "local-llm")  # a model chosen by difficulty answered
    assert response.text.strip()
    assert response.citations, "a source answer carries its citations"
    first = response.citations[0]
    assert (first.source, first.document_id) == (handbook, "cache.md")
    assert "Settings" in " ".join(c.chunk_title for c in response.citations)

    # The stream's last chunk carries the citations too.
    chunks = [
        c
        async for c in router.stub.ChatStream(
            _ask(QUESTION, cache_policy=policy), metadata=AUTH, timeout=120
        )
    ]
    assert chunks[0].decision.source == handbook
    assert chunks[-1].finish_reason != common_pb2.FINISH_REASON_ERROR
    assert [c.document_id for c in chunks[-1].citations] == [
        c.document_id for c in response.citations
    ]

    # OpenAI HTTP: the documented `gearshift` extension field and a header.
    body = {"model": "auto", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16}
    headers = {**HTTP_AUTH, "x-gearshift-cache-policy": "bypass"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{router.http_base}/chat/completions", json=body, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["x-gearshift-source"] == handbook
            answer = await resp.json()
        assert answer["gearshift"]["source"] == handbook
        assert answer["gearshift"]["citations"][0]["document"] == "cache.md"
        async with http.post(
            f"{router.http_base}/chat/completions", json={**body, "stream": True}, headers=headers
        ) as resp:
            events = [
                json.loads(line[6:])
                for line in (await resp.text()).splitlines()
                if line.startswith("data: {")
            ]
        assert events[-1]["gearshift"]["citations"][0]["source"] == handbook


async def test_a_source_that_is_down_is_skipped_and_a_pinned_one_is_unavailable(
    sources_router: tuple[RunningRouter, str],
) -> None:
    router, _ = sources_router
    question = "A GPU node is down: what is the procedure?"
    policy = router_pb2.CACHE_POLICY_BYPASS
    response = await router.stub.Chat(
        _ask(question, cache_policy=policy), metadata=AUTH, timeout=120
    )
    d = response.decision
    assert d.candidates[0].name == "runbooks", d.reasons
    assert not d.source and not response.citations
    assert any(r.startswith("skipped source runbooks (UNAVAILABLE") for r in d.reasons), d.reasons
    assert response.text.strip()  # answered by the model routes instead

    with pytest.raises(grpc.aio.AioRpcError) as pinned:
        await router.stub.Chat(_ask(question, model="runbooks"), metadata=AUTH, timeout=30)
    assert pinned.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "runbooks" in (pinned.value.details() or "")

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await router.stub.Chat(_ask(question, model="no-such-source"), metadata=AUTH, timeout=30)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "runbooks" in (unknown.value.details() or "")  # the known names are listed


async def test_reingesting_a_source_invalidates_its_cached_answers(
    sources_router: tuple[RunningRouter, str], retriever_endpoint: str
) -> None:
    router, handbook = sources_router
    assert router.app.cache is not None
    # Only whole answers (finish STOP) are cached: leave room for the model to finish.
    ask = _ask(QUESTION, model=handbook, max_tokens=400)
    ask.sampling.stop.append("\n")  # the small model rambles; a stop string ends it with STOP
    first = await router.stub.Chat(ask, metadata=AUTH, timeout=300)
    assert first.decision.source == handbook
    assert first.finish_reason == common_pb2.FINISH_REASON_STOP
    await router.app.cache.drain()  # the answer is stored in the background
    again = await router.stub.Chat(ask, metadata=AUTH, timeout=300)
    assert again.decision.cache == common_pb2.CACHE_OUTCOME_HIT_EXACT, again.decision.reasons
    assert again.citations  # a hit still says where the answer came from
    version = await _ingest(retriever_endpoint, handbook, HANDBOOK_V2)
    assert version != first.decision.source_content_version
    fresh = await router.stub.Chat(ask, metadata=AUTH, timeout=300)
    assert fresh.decision.cache != common_pb2.CACHE_OUTCOME_HIT_EXACT
    assert fresh.decision.cache != common_pb2.CACHE_OUTCOME_HIT_SEMANTIC
    assert fresh.decision.source_content_version == version


async def _answers(router: RunningRouter, handbook: str) -> tuple[Any, list[Any]]:
    """The unary answer and the streamed chunks of the question, pinned to the handbook."""
    policy = router_pb2.CACHE_POLICY_BYPASS
    ask = _ask(QUESTION, model=handbook, max_tokens=48, cache_policy=policy)
    response = await router.stub.Chat(ask, metadata=AUTH, timeout=120)
    chunks = [c async for c in router.stub.ChatStream(ask, metadata=AUTH, timeout=120)]
    return response, chunks


async def test_quote_mode_answers_with_the_passage_and_calls_no_model(
    slm_server: Any,
    proxy_server: Any,
    retriever_endpoint: str,
    handbook: str,
    tmp_path: Path,
) -> None:
    routes = _routes(slm_server, proxy_server, retriever_endpoint, handbook)
    router = await start_router(tmp_path, routes, source_answer="quote")
    try:
        calls_before = _in_process_generations()
        response, chunks = await _answers(router, handbook)
    finally:
        await stop_router(router)
    assert _in_process_generations() == calls_before, "no model was called"
    assert "max_false_hit_rate" in response.text and "[1]" in response.text
    assert response.text.startswith("From "), response.text
    assert response.usage.total_tokens == 0
    assert response.decision.model == "" and response.decision.source == handbook
    assert any("quoting passage [1]" in r for r in response.decision.reasons)
    assert [c.document_id for c in response.citations] == ["cache.md"]
    assert "".join(c.text_delta for c in chunks) == response.text
    assert chunks[-1].finish_reason == common_pb2.FINISH_REASON_STOP


@pytest.mark.parametrize(("floor", "served"), [(0.0, "model"), (1.0, "quote")])
async def test_verify_mode_serves_the_models_answer_only_when_its_passages_support_it(
    slm_server: Any,
    proxy_server: Any,
    retriever_endpoint: str,
    handbook: str,
    tmp_path: Path,
    floor: float,
    served: str,
) -> None:
    routes = _routes(slm_server, proxy_server, retriever_endpoint, handbook)
    router = await start_router(tmp_path, routes, source_answer="verify", source_support_min=floor)
    try:
        response, chunks = await _answers(router, handbook)
    finally:
        await stop_router(router)
    reasons = " ".join(response.decision.reasons)
    assert response.usage.completion_tokens > 0, "the model answered first"
    if served == "model":
        assert "answer supported by its passages" in reasons, reasons
        assert not response.text.startswith("From "), response.text
        assert len(response.citations) >= 1
    else:
        # A greedy answer of the 135M model always says something its passage does not.
        assert "was not served (support" in reasons, reasons
        assert response.text.startswith("From ") and "max_false_hit_rate" in response.text
        assert [c.document_id for c in response.citations] == ["cache.md"]
    # A stream is held whole and judged the same way.
    assert "".join(c.text_delta for c in chunks) == response.text
