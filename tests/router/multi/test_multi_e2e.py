"""Multi-routing end to end: one question to several routes at once, the answers combined.

One router (module-scoped) over the session's real services: the SLM on vLLM, the
stand-in large model behind the proxy, the cache and `gearshift serve retriever` with two
ingested sources. A third model route points at the real SLM server under a model name it
does not serve, so its branch fails at generation (a real backend error, not a mock).
Answers are short (max_tokens 16) to keep the module fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gearshift.cli.chat import _explain, add_route_parser
from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2, router_pb2
from tests.router.conftest import KEY_A, RunningRouter, start_router, stop_router
from tests.router.test_sources_e2e import HANDBOOK, _ingest, _source

AUTH = (("authorization", f"Bearer {KEY_A}"),)
HTTP_AUTH = {"authorization": f"Bearer {KEY_A}"}
RUNBOOK = """# GPU nodes

## When a GPU node goes down

Cordon the node, drain its pods, then open a ticket with the hardware team.
"""
COMPARE = (
    "Compare what the handbook says about the cache's maximum false-hit rate with the "
    "runbook's procedure when a GPU node goes down."
)
LIGHTHOUSE = "Tell me a piece of trivia about the history of lighthouses."
BROKEN = "trivia-model"
# The handbook's grounded answer is one short sentence; the general model, which does not
# know Gearshift, explains at length: a fast branch and a slow one on the same engine.
FALSE_HITS = "What is the default max_false_hit_rate of the semantic cache?"

pytestmark = pytest.mark.vllm


def _ask(
    question: str, multi: router_pb2.MultiPolicy | None = None, max_tokens: int = 16, **kw: Any
) -> router_pb2.ChatRequest:
    request = router_pb2.ChatRequest(
        model="auto",
        messages=[common_pb2.ChatMessage(role="user", content=question)],
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens),
        cache_policy=kw.pop("cache_policy", router_pb2.CACHE_POLICY_BYPASS),
        **kw,
    )
    if multi is not None:
        request.multi.CopyFrom(multi)
    return request


@pytest.fixture(scope="module")
async def multi_router(
    slm_server: Any,
    proxy_server: Any,
    cache_server: Any,
    retriever_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[RunningRouter, str, str]]:
    suffix = uuid.uuid4().hex[:8]
    handbook, runbooks = f"handbook-{suffix}", f"runbooks-{suffix}"
    await _ingest(retriever_endpoint, handbook, HANDBOOK)
    await _ingest(retriever_endpoint, runbooks, RUNBOOK)
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    routes.append(
        {
            "apiVersion": "gearshift.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": BROKEN},
            "spec": {
                "tier": "slm",
                "description": "Trivia about the history of lighthouses and lighthouse keepers",
                # The real SLM server, asked for a model it does not serve: Generate fails.
                "model": {"servedName": "no-such-model"},
                "routing": {"priority": 9, "endpoint": slm_server.address},
            },
        }
    )
    routes += [
        _source(
            handbook,
            "Gearshift's handbook: how to configure and operate the semantic cache",
            retriever_endpoint,
            ["How do I configure the cache's maximum false-hit rate?"],
        ),
        _source(
            runbooks,
            "Runbooks of the platform team: what to do when a GPU node goes down",
            retriever_endpoint,
            ["The GPU node is down, what is the procedure?"],
        ),
    ]
    tmp: Path = tmp_path_factory.mktemp("multi-router")
    running = await start_router(
        tmp,
        routes,
        cache_address=cache_server.address,
        source_timeout_s=5.0,
        difficulty_threshold=1.0,  # the general branch is the SLM: predictable in tests
        multi_margin=1.0,  # every option over the threshold joins the plan
        multi_synthesis_context_chars=200,  # two grounded answers exceed it: a summary tree
    )
    try:
        yield running, handbook, runbooks
    finally:
        await stop_router(running)


def _branches(decision: router_pb2.RouteDecision) -> dict[str, router_pb2.BranchResult]:
    return {b.name: b for b in decision.branches}


def _sum(branches: Any) -> int:
    return sum(b.usage.total_tokens for b in branches)


async def test_two_sources_and_a_model_concat_with_attribution_and_accounting(
    multi_router: tuple[RunningRouter, str, str],
    span_exporter: InMemorySpanExporter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    router, handbook, runbooks = multi_router
    policy = router_pb2.MultiPolicy(max_routes=3, combine="concat", min_successful=3)
    # The plan first: a dry run names every branch, `route explain` prints it.
    plan = await router.stub.Route(_ask(COMPARE, policy), metadata=AUTH, timeout=60)
    assert [(b.name, b.kind, b.status) for b in plan.branches] == [
        (plan.branches[0].name, "source", "planned"),
        (plan.branches[1].name, "source", "planned"),
        ("local-slm", "general", "planned"),
    ], (plan.candidates, plan.reasons)
    assert {plan.branches[0].name, plan.branches[1].name} == {handbook, runbooks}
    parser = argparse.ArgumentParser()
    add_route_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["route", "explain", COMPARE, "--router", router.address, "--api-key", KEY_A,
         "--multi", "max=3; combine=concat; min_ok=3"]
    )  # fmt: skip
    assert await _explain(args) == 0
    out = capsys.readouterr().out
    assert "multi:      3 branches, combine concat" in out
    assert f"  source  {handbook}" in out and "  general local-slm" in out

    response = await router.stub.Chat(_ask(COMPARE, policy), metadata=AUTH, timeout=180)
    d = response.decision
    branches = _branches(d)
    assert set(branches) == {handbook, runbooks, "local-slm"}
    assert all(b.status == "ok" and b.latency_ms > 0 for b in branches.values()), d.branches
    assert all(b.usage.total_tokens > 0 for b in branches.values())
    assert (d.route, d.combine) == ("multi", "concat")
    for name in (f"source {handbook}", f"source {runbooks}", "model local-slm"):
        assert f"From {name}:" in response.text
    # Citations of both sources, numbered into one list; usage sums every call.
    assert {c.source for c in response.citations} == {handbook, runbooks}
    assert response.usage.total_tokens == _sum(d.branches)

    # Tracing: one span per branch under the request span, one for the combination.
    trace_id = int(response.trace_id, 16)
    spans = [s for s in span_exporter.get_finished_spans() if s.context.trace_id == trace_id]
    root = next(s for s in spans if s.parent is None)
    branch_spans = [s for s in spans if s.name == "router.multi.branch"]
    assert sorted(s.attributes["gearshift.branch"] for s in branch_spans) == sorted(branches)
    assert all(s.parent.span_id == root.context.span_id for s in branch_spans)
    (combine,) = [s for s in spans if s.name == "router.multi.combine"]
    assert combine.parent.span_id == root.context.span_id

    # OpenAI HTTP: the header asks, the `gearshift` extension reports every branch.
    body = {"model": "auto", "messages": [{"role": "user", "content": COMPARE}],
            "max_tokens": 16, "temperature": 0}  # fmt: skip
    headers = {
        **HTTP_AUTH,
        "x-gearshift-cache-policy": "bypass",
        # Two answers are enough; the grace lets the third join (every branch reported ok).
        "x-gearshift-multi": "max=3; combine=concat; min_ok=2; grace=120",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{router.http_base}/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        assert resp.headers["x-gearshift-combine"] == "concat"
    multi = answer["gearshift"]["multi"]
    assert {b["name"] for b in multi["branches"]} == {handbook, runbooks, "local-slm"}
    assert all(b["status"] == "ok" and b["latency_ms"] > 0 for b in multi["branches"])
    assert answer["usage"]["total_tokens"] == sum(
        b["usage"]["total_tokens"] for b in multi["branches"]
    )
    assert {c["source"] for c in answer["gearshift"]["citations"]} == {handbook, runbooks}


async def test_a_failing_branch_is_reported_and_the_others_answer(
    multi_router: tuple[RunningRouter, str, str],
) -> None:
    router, _, _ = multi_router
    policy = router_pb2.MultiPolicy(max_routes=2, combine="concat", min_successful=1)
    response = await router.stub.Chat(_ask(LIGHTHOUSE, policy), metadata=AUTH, timeout=120)
    branches = _branches(response.decision)
    assert set(branches) == {BROKEN, "local-slm"}, response.decision.reasons
    assert branches[BROKEN].status == "failed"
    assert "no-such-model" in branches[BROKEN].error
    assert branches["local-slm"].status == "ok"
    assert "From model local-slm:" in response.text and BROKEN not in response.text


async def test_a_combination_with_a_failed_branch_is_not_cached(
    multi_router: tuple[RunningRouter, str, str],
) -> None:
    router, _, _ = multi_router
    assert router.app.cache is not None
    policy = router_pb2.MultiPolicy(max_routes=2, combine="concat", min_successful=1)
    question = f"{LIGHTHOUSE} ({uuid.uuid4().hex[:6]})"
    default = router_pb2.CACHE_POLICY_UNSPECIFIED
    for _ in range(2):
        reply = await router.stub.Chat(
            _ask(question, policy, cache_policy=default), metadata=AUTH, timeout=120
        )
        # Both times answered afresh: the broken route's failure made it a partial answer.
        assert reply.decision.cache == common_pb2.CACHE_OUTCOME_MISS
        assert _branches(reply.decision)[BROKEN].status == "failed"
        await router.app.cache.drain()


async def test_late_branches_are_cancelled_at_the_backend_and_min_successful_fails_clearly(
    multi_router: tuple[RunningRouter, str, str], slm_server: Any
) -> None:
    router, _, _ = multi_router
    load = slm_server.engine.load
    before = sum(load.aborted_total.values())
    policy = router_pb2.MultiPolicy(
        max_routes=2, combine="concat", min_successful=1, branch_timeout_s=1.5
    )
    story = "Write a very long story about the history of lighthouses and their keepers."
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await router.stub.Chat(_ask(story, policy, max_tokens=1500), metadata=AUTH, timeout=60)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    details = failed.value.details() or ""
    assert "only 0 of 2 branches answered and min_successful is 1" in details
    assert f"{BROKEN} failed" in details and "local-slm late (past its deadline" in details
    status = rpc_status.from_call(failed.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details)
    assert info.metadata["failed_branches"] == f"{BROKEN},local-slm"
    for _ in range(100):
        if sum(load.aborted_total.values()) > before:
            break
        await asyncio.sleep(0.05)
    assert sum(load.aborted_total.values()) > before, "the late branch kept generating"


async def test_once_min_successful_answered_the_others_get_the_grace_then_are_cancelled(
    multi_router: tuple[RunningRouter, str, str], slm_server: Any
) -> None:
    router, handbook, _ = multi_router
    load = slm_server.engine.load
    before = sum(load.aborted_total.values())

    async def ask(grace_s: float) -> router_pb2.ChatResponse:
        policy = router_pb2.MultiPolicy(
            max_routes=2, combine="concat", min_successful=1, grace_s=grace_s
        )
        request = _ask(FALSE_HITS, policy, max_tokens=160)
        return await router.stub.Chat(request, metadata=AUTH, timeout=180)

    # Grace 0: the first answer is enough, the slower branch is cancelled at once.
    quick = await ask(0.0)
    branches = _branches(quick.decision)
    assert set(branches) == {handbook, "local-slm"}, quick.decision.reasons
    assert branches[handbook].status == "ok", branches[handbook].error
    slow = branches["local-slm"]
    assert (slow.status, slow.error) == ("cancelled", "not needed: min_successful reached")
    assert f"From source {handbook}:" in quick.text and "local-slm" not in quick.text
    for _ in range(100):
        if sum(load.aborted_total.values()) > before:
            break
        await asyncio.sleep(0.05)
    assert sum(load.aborted_total.values()) > before, "the unneeded branch kept generating"

    # A grace long enough for the slower branch: both answers are combined.
    patient = await ask(120.0)
    branches = _branches(patient.decision)
    assert all(b.status == "ok" for b in branches.values()), patient.decision.branches
    assert f"From source {handbook}:" in patient.text
    assert "From model local-slm:" in patient.text
    assert branches["local-slm"].latency_ms > branches[handbook].latency_ms


async def test_best_vote_and_synthesize(multi_router: tuple[RunningRouter, str, str]) -> None:
    router, handbook, runbooks = multi_router

    async def combined(combine: str) -> router_pb2.ChatResponse:
        policy = router_pb2.MultiPolicy(max_routes=2, combine=combine, min_successful=2)
        return await router.stub.Chat(_ask(COMPARE, policy), metadata=AUTH, timeout=180)

    best, vote, synth = await asyncio.gather(
        combined("best"), combined("vote"), combined("synthesize")
    )
    for response in (best, vote, synth):
        assert {b.name for b in response.decision.branches} == {handbook, runbooks}
        assert all(b.status == "ok" for b in response.decision.branches)
        assert response.text.strip()
    # best: the large-tier judge was asked (its call counted) and the reason recorded.
    assert best.decision.combined_by == "local-llm"
    assert best.decision.combine_reason.startswith("best: ")
    assert best.usage.total_tokens > _sum(best.decision.branches)
    assert "From source" not in best.text
    # vote: no model call; the reason says what won.
    assert vote.decision.combine_reason.startswith("vote: ")
    assert vote.usage.total_tokens == _sum(vote.decision.branches)
    # synthesize: grounded answers plus passages exceed 200 characters, so they were
    # summarised in a tree before the model difficulty chose wrote the answer.
    reason = synth.decision.combine_reason
    assert "summarised in a tree" in reason and reason.endswith("by local-slm"), reason
    assert synth.usage.total_tokens > _sum(synth.decision.branches)
    assert {c.source for c in synth.citations} == {handbook, runbooks}


async def test_the_combined_answer_streams_with_the_plan_first(
    multi_router: tuple[RunningRouter, str, str],
) -> None:
    router, handbook, runbooks = multi_router
    policy = router_pb2.MultiPolicy(max_routes=3, combine="concat", min_successful=1, grace_s=120)
    chunks = [
        c async for c in router.stub.ChatStream(_ask(COMPARE, policy), metadata=AUTH, timeout=180)
    ]
    first, last = chunks[0], chunks[-1]
    assert {b.name for b in first.decision.branches} == {handbook, runbooks, "local-slm"}
    assert first.trace_id and len(chunks) >= 3  # one section per branch, then the end
    assert last.finish_reason == common_pb2.FINISH_REASON_STOP
    assert all(b.status == "ok" for b in last.final_decision.branches)
    assert last.usage.total_tokens == _sum(last.final_decision.branches)
    assert "From source" in "".join(c.text_delta for c in chunks)

    body = {"model": "auto", "messages": [{"role": "user", "content": COMPARE}],
            "max_tokens": 16, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    headers = {
        **HTTP_AUTH,
        "x-gearshift-cache-policy": "bypass",
        "x-gearshift-multi": "max=2; grace=120",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{router.http_base}/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        events = [
            json.loads(line[6:])
            for line in (await resp.text()).splitlines()
            if line.startswith("data: {")
        ]
    assert len(events[0]["gearshift"]["multi"]["branches"]) == 2
    ends = [e for e in events if e.get("choices") and e["choices"][0]["finish_reason"]]
    assert all(b["status"] == "ok" for b in ends[-1]["gearshift"]["multi"]["branches"])
    assert events[-1]["usage"]["total_tokens"] > 0


async def test_combined_and_single_answers_are_cached_apart(
    multi_router: tuple[RunningRouter, str, str],
) -> None:
    router, _, _ = multi_router
    assert router.app.cache is not None
    question = f"{COMPARE} ({uuid.uuid4().hex[:6]})"
    policy = router_pb2.MultiPolicy(max_routes=2, combine="concat")
    default = router_pb2.CACHE_POLICY_UNSPECIFIED
    first = await router.stub.Chat(
        _ask(question, policy, cache_policy=default), metadata=AUTH, timeout=180
    )
    assert first.decision.cache == common_pb2.CACHE_OUTCOME_MISS
    await router.app.cache.drain()
    again = await router.stub.Chat(
        _ask(question, policy, cache_policy=default), metadata=AUTH, timeout=60
    )
    assert again.decision.cache == common_pb2.CACHE_OUTCOME_HIT_EXACT
    assert again.text == first.text and again.decision.route == "cache"
    # The same question on a single route never gets the combined answer ...
    single = await router.stub.Chat(
        _ask(question, cache_policy=default), metadata=AUTH, timeout=120
    )
    assert single.decision.cache == common_pb2.CACHE_OUTCOME_MISS and not single.decision.branches
    # ... and another policy (here: another strategy) is another entry.
    other = router_pb2.MultiPolicy(max_routes=2, combine="vote")
    voted = await router.stub.Chat(
        _ask(question, other, cache_policy=default), metadata=AUTH, timeout=180
    )
    assert voted.decision.cache == common_pb2.CACHE_OUTCOME_MISS


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (router_pb2.MultiPolicy(max_routes=9), "multi.max_routes"),
        (router_pb2.MultiPolicy(max_routes=2, combine="average"), "multi.combine"),
        (router_pb2.MultiPolicy(max_routes=2, min_successful=3), "multi.min_successful"),
        (router_pb2.MultiPolicy(max_routes=2, branch_timeout_s=-1), "multi.branch_timeout_s"),
        (router_pb2.MultiPolicy(max_routes=2, grace_s=-0.5), "multi.grace_s"),
    ],
)
async def test_bad_policy_values_are_invalid_argument_naming_the_field(
    multi_router: tuple[RunningRouter, str, str], policy: router_pb2.MultiPolicy, field: str
) -> None:
    router, _, _ = multi_router
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await router.stub.Chat(_ask(COMPARE, policy), metadata=AUTH, timeout=30)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (bad.value.details() or "")


@pytest.mark.parametrize(
    ("header", "param"),
    [
        ("max=0", "x-gearshift-multi.max"),
        ("max=9", "x-gearshift-multi.max_routes"),
        ("combine=average", "x-gearshift-multi.combine"),
        ("max=2; min_ok=x", "x-gearshift-multi.min_ok"),
        ("max=2; grace=-1", "x-gearshift-multi.grace"),
        ("fan out please", "x-gearshift-multi"),
    ],
)
async def test_bad_multi_headers_are_400_naming_the_part(
    multi_router: tuple[RunningRouter, str, str], header: str, param: str
) -> None:
    router, _, _ = multi_router
    body = {"model": "auto", "messages": [{"role": "user", "content": COMPARE}]}
    headers = {**HTTP_AUTH, "x-gearshift-multi": header}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{router.http_base}/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error


async def test_a_pinned_model_with_an_explicit_multi_policy_is_refused(
    multi_router: tuple[RunningRouter, str, str],
) -> None:
    router, _, _ = multi_router
    request = _ask(COMPARE, router_pb2.MultiPolicy(max_routes=2))
    request.model = "local-slm"
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await router.stub.Chat(request, metadata=AUTH, timeout=30)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "multi.max_routes" in (bad.value.details() or "")
