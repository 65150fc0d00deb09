"""Fast checks of the router's pure parts: digest, cache guards, route choice, capabilities."""

from __future__ import annotations

import json

import pytest

from gearshift.router.core.context_digest import context_digest, is_sampled
from gearshift.router.core.plan import PipelineConfig, Plan
from gearshift.router.core.request_options import structured_answer_problem
from gearshift.router.pipeline import Pipeline
from gearshift.router.scorer.protocol import LengthScorer
from gearshift.router.table.backends import BackendPool
from gearshift.router.table.routing_table import Route, RoutingTable
from gearshift.routes.model_route import Capabilities
from gearshift.runtime.errors import FailedPrecondition
from gearshift.v1 import common_pb2, router_pb2


def _msgs(*pairs: tuple[str, str]) -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role=r, content=c) for r, c in pairs]


def test_digest_covers_system_prompt_history_and_sampling() -> None:
    greedy = common_pb2.SamplingParams(temperature=0.0)
    base = context_digest(_msgs(("user", "hi")), greedy)
    assert base == context_digest(_msgs(("user", "hi")), greedy)
    # The question itself is compared by meaning, not by the digest.
    assert base == context_digest(_msgs(("user", "hello there")), greedy)
    assert base != context_digest(_msgs(("system", "be terse"), ("user", "hi")), greedy)
    assert base != context_digest(_msgs(("user", "a"), ("assistant", "b"), ("user", "hi")), greedy)
    assert base != context_digest(_msgs(("user", "hi")), common_pb2.SamplingParams())
    assert base != context_digest(
        _msgs(("user", "hi")), common_pb2.SamplingParams(temperature=0.0, max_tokens=5)
    )


def test_unset_temperature_is_sampled() -> None:
    assert is_sampled(common_pb2.SamplingParams())
    assert is_sampled(common_pb2.SamplingParams(temperature=0.7))
    assert not is_sampled(common_pb2.SamplingParams(temperature=0.0))


def test_digest_keys_options_that_change_the_answer() -> None:
    msgs = _msgs(("user", "q"))
    plain = common_pb2.SamplingParams(temperature=0.0)
    assert context_digest(msgs, plain) == context_digest(
        msgs, common_pb2.SamplingParams(temperature=0.0, logprobs=True)
    )
    for changed in (
        common_pb2.SamplingParams(temperature=0.0, presence_penalty=1.0),
        common_pb2.SamplingParams(temperature=0.0, frequency_penalty=1.0),
        common_pb2.SamplingParams(temperature=0.0, logit_bias={7: 5.0}),
        common_pb2.SamplingParams(
            temperature=0.0, response_format=common_pb2.ResponseFormat(type="json_object")
        ),
    ):
        assert context_digest(msgs, changed) != context_digest(msgs, plain)
    a = common_pb2.ResponseFormat(type="json_schema", schema_json='{"type": "object"}')
    b = common_pb2.ResponseFormat(type="json_schema", schema_json='{"type": "array"}')
    assert context_digest(msgs, common_pb2.SamplingParams(response_format=a)) != context_digest(
        msgs, common_pb2.SamplingParams(response_format=b)
    )


def test_structured_answers_are_checked_before_caching() -> None:
    fmt = common_pb2.ResponseFormat(
        type="json_schema",
        schema_json=json.dumps({"type": "object", "required": ["a"]}),
    )
    assert structured_answer_problem(fmt, '{"a": 1}') == ""
    assert "schema" in structured_answer_problem(fmt, '{"b": 1}')
    assert "not JSON" in structured_answer_problem(fmt, '{"a": ')
    assert structured_answer_problem(common_pb2.ResponseFormat(type="json_object"), "[1]")
    assert structured_answer_problem(common_pb2.ResponseFormat(), "free text") == ""


def _route(name: str, tier: str, **kw: object) -> Route:
    return Route(name=name, tier=tier, model=name + "-model", endpoints=(f"{name}:1",), **kw)  # type: ignore[arg-type]


def _pipeline(routes: list[Route], threshold: float = 0.5) -> tuple[Pipeline, RoutingTable]:
    table = RoutingTable(BackendPool())
    table.snapshot = table.snapshot.of(routes, 1)
    config = PipelineConfig(difficulty_threshold=threshold)
    return Pipeline(config, table, None, LengthScorer(), None), table  # type: ignore[arg-type]


def _choose(pipeline: Pipeline, difficulty: float) -> Plan:
    class Fixed(LengthScorer):
        def score(self, embedding: object, text: str) -> float:  # type: ignore[override]
            return difficulty

    pipeline.scorer = Fixed()
    plan = Plan(
        "r", "t", _msgs(("user", "q")), common_pb2.SamplingParams(), router_pb2.RouteDecision()
    )
    pipeline.planner.choose(plan, pipeline.table.snapshot, None)
    return plan


def test_selection_by_threshold_band_priority_and_health() -> None:
    routes = [
        _route("small-a", "slm", priority=1, fallback="big"),
        _route("small-b", "slm", priority=0, difficulty_max=0.2),
        _route("big", "llm", max_share=0.3),
    ]
    pipeline, table = _pipeline(routes)
    assert _choose(pipeline, 0.1).decision.route == "small-b"  # in band, better priority
    plan = _choose(pipeline, 0.3)
    assert plan.decision.route == "small-a"  # small-b's band ends at 0.2
    assert [r.name for r in plan.routes] == ["small-a", "big"]
    assert _choose(pipeline, 0.9).decision.tier == common_pb2.TIER_LLM
    # An unhealthy SLM is skipped with a reason; the request goes up a tier.
    table.state("small-a:1").healthy = False
    table.state("small-b:1").healthy = False
    plan = _choose(pipeline, 0.1)
    assert plan.decision.route == "big"
    assert any("skipped small-a" in r for r in plan.decision.reasons)
    # A breaker opened by call failures does the same, and closes after a success.
    table.state("small-b:1").healthy = True
    for _ in range(3):
        table.record_failure("small-b:1", "UNAVAILABLE")
    assert _choose(pipeline, 0.1).decision.route == "big"
    table.record_success("small-b:1")
    assert _choose(pipeline, 0.1).decision.route == "small-b"


async def test_routes_without_a_needed_capability_are_excluded_with_reasons() -> None:
    plain = _route("small", "slm")
    tools = Capabilities(tools=True, json_schema=True)
    big = _route("big", "llm", capabilities=tools)
    pipeline, _ = _pipeline([plain, big], threshold=0.99)
    request = router_pb2.ChatRequest(messages=_msgs(("user", "weather?")))
    request.tools.add(name="get_weather")
    decision = await pipeline.route(request, "t", None)
    assert decision.route == "big"  # the easy question would have gone to small
    assert [(e.route, list(e.missing)) for e in decision.excluded] == [("small", ["tools"])]
    assert "excluded small: lacks tools" in decision.reasons
    # tool_choice none asks for nothing: every route stays.
    request.tool_choice.mode = "none"
    assert (await pipeline.route(request, "t", None)).route == "small"
    # Pinning a route that lacks the capability is refused, never downgraded.
    request.tool_choice.mode = "auto"
    request.model = "small"
    with pytest.raises(FailedPrecondition, match="tools"):
        await pipeline.route(request, "t", None)


async def test_no_capable_route_is_failed_precondition_naming_the_capability() -> None:
    pipeline, _ = _pipeline(
        [_route("small", "slm"), _route("big", "llm", capabilities=Capabilities(tools=True))]
    )
    request = router_pb2.ChatRequest(messages=_msgs(("user", "json please")))
    request.sampling.response_format.type = "json_object"
    with pytest.raises(FailedPrecondition) as info:
        await pipeline.route(request, "t", None)
    assert info.value.reason == "CAPABILITY_MISSING"
    assert "jsonSchema" in info.value.message and "small lacks jsonSchema" in info.value.message
    short = Capabilities(context_tokens=64)
    pipeline, _ = _pipeline([_route("small", "slm", capabilities=short), _route("big", "llm")])
    request = router_pb2.ChatRequest(messages=_msgs(("user", "x" * 1000)))
    decision = await pipeline.route(request, "t", None)
    assert decision.route == "big" and decision.excluded[0].missing == ["contextTokens"]


def test_chunks_fold_into_choices_tool_calls_and_openai_json() -> None:
    from gearshift.router.core.answers import AnswerFolder
    from gearshift.router.openai.protocol import choices_json, tool_call_deltas_json

    folder = AnswerFolder()
    delta = common_pb2.ToolCallDelta
    for chunk in (
        router_pb2.ChatStreamChunk(
            tool_calls=[delta(index=0, id="c1", name="f", arguments='{"a"')]
        ),
        router_pb2.ChatStreamChunk(index=1, text_delta="plain"),
        router_pb2.ChatStreamChunk(
            tool_calls=[delta(index=0, arguments=": 1}")],
            finish_reason=common_pb2.FINISH_REASON_TOOL_CALLS,
        ),
        router_pb2.ChatStreamChunk(index=1, finish_reason=common_pb2.FINISH_REASON_STOP),
    ):
        folder.add(chunk)
    response = router_pb2.ChatResponse()
    folder.fill(response)
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [("c1", "f", '{"a": 1}')]
    assert [c.index for c in response.choices] == [0, 1] and response.choices[1].text == "plain"
    first, second = choices_json(response, want_logprobs=False)
    assert first["finish_reason"] == "tool_calls" and first["message"]["content"] is None
    assert first["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert second["message"] == {"role": "assistant", "content": "plain"}
    assert tool_call_deltas_json([delta(index=0, arguments="x")]) == [
        {"index": 0, "function": {"arguments": "x"}}
    ]
