"""Fast checks of the router's pure parts: digest, keys, HTTP parsing, route selection."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from gearshift.router.auth import KeyTable
from gearshift.router.backends import BackendPool
from gearshift.router.context_digest import context_digest, is_sampled
from gearshift.router.local import local_default_routes
from gearshift.router.openai_http import parse_chat_request
from gearshift.router.pipeline import Pipeline, PipelineConfig, Plan
from gearshift.router.request_options import structured_answer_problem
from gearshift.router.routing_table import Route, RoutingTable, routes_from_objects
from gearshift.router.scoring import LengthScorer
from gearshift.routes import ModelRoute
from gearshift.routes.model_route import Capabilities
from gearshift.runtime.errors import FailedPrecondition, InvalidArgument, Unauthenticated
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


def test_keys_file_reloads_and_refuses_unknown(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"k1": "t1"}))
    keys = KeyTable(str(path), check_interval_s=0.0)
    assert keys.authenticate("Bearer k1") == "t1"
    for bad in (None, "", "Bearer ", "Bearer nope", "Basic k1"):
        with pytest.raises(Unauthenticated):
            keys.authenticate(bad)
    tmp = tmp_path / "keys.tmp"
    tmp.write_text(yaml.safe_dump({"k2": "t2"}))
    tmp.replace(path)  # a Secret volume swaps the file atomically
    assert keys.authenticate("Bearer k2") == "t2"
    with pytest.raises(Unauthenticated):
        keys.authenticate("Bearer k1")
    path.write_text("{not yaml")  # a broken file keeps the last good table
    time.sleep(0.01)
    assert keys.authenticate("Bearer k2") == "t2"


def test_openai_body_parsing_names_bad_fields() -> None:
    chat, stream = parse_chat_request(
        {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "q"}]},
            ],
            "temperature": 0,
            "max_tokens": 7,
            "stop": "\n",
            "stream": True,
        },
        {"x-gearshift-cache-policy": "no-store"},
    )
    assert stream
    assert [m.content for m in chat.messages] == ["s", "q"]
    assert chat.sampling.HasField("temperature") and chat.sampling.temperature == 0
    assert chat.sampling.max_tokens == 7 and list(chat.sampling.stop) == ["\n"]
    assert chat.cache_policy == router_pb2.CACHE_POLICY_NO_STORE
    with pytest.raises(InvalidArgument) as info:
        parse_chat_request({"messages": "x", "temperature": "hot", "n": 0}, {})
    fields = {v.field for v in info.value.violations}
    assert {"messages", "temperature", "n"} <= fields


def test_parameters_the_router_cannot_honour_are_refused_by_name() -> None:
    base = {"model": "auto", "messages": [{"role": "user", "content": "q"}]}
    functions = [{"name": "f", "parameters": {}}]
    body = {**base, "functions": functions, "audio": {"voice": "alloy"}}
    with pytest.raises(InvalidArgument) as info:
        parse_chat_request(body, {})
    fields = {v.field for v in info.value.violations}
    assert fields == {"functions", "audio"}
    assert "tools" in info.value.violations[0].description
    assert "drop_unsupported_params" in info.value.violations[0].description
    # Neutral values (as SDKs send them) are fine, and an operator may choose to drop.
    neutral = {**base, "modalities": ["text"], "functions": []}
    parse_chat_request(neutral, {})
    chat, _ = parse_chat_request(body, {}, drop_unsupported=True)
    assert [m.content for m in chat.messages] == ["q"]


def test_openai_options_become_contract_fields() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {"50256": -100},
        "n": 2,
        "user": "alice",
        "max_completion_tokens": 9,
    }
    chat, _ = parse_chat_request(body, {})
    assert chat.messages[1].tool_calls[0].name == "f" and chat.messages[1].content == ""
    assert chat.messages[2].tool_call_id == "c1"
    assert [t.name for t in chat.tools] == ["f"] and json.loads(
        chat.tools[0].parameters_json
    ) == schema
    assert (chat.tool_choice.mode, chat.tool_choice.function_name) == ("function", "f")
    assert chat.HasField("parallel_tool_calls") and not chat.parallel_tool_calls
    s = chat.sampling
    assert (
        s.response_format.type == "json_schema"
        and json.loads(s.response_format.schema_json) == schema
    )
    assert (round(s.presence_penalty, 3), round(s.frequency_penalty, 3)) == (0.5, -0.5)
    assert dict(s.logit_bias) == {50256: -100.0} and s.n == 2 and s.max_tokens == 9
    assert chat.user == "alice"
    with pytest.raises(InvalidArgument) as info:
        parse_chat_request(
            {**body, "tool_choice": 3, "logit_bias": {"x": 1}, "response_format": {"type": 1}}, {}
        )
    assert {v.field for v in info.value.violations} == {
        "tool_choice",
        "logit_bias",
        "response_format",
    }


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
    pipeline.planner._choose(plan, pipeline.table.snapshot, None)
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


def test_least_loaded_replica() -> None:
    table = RoutingTable(BackendPool())
    route = Route("r", "slm", "m", ("a:1", "b:1", "c:1"))
    table.state("a:1").load = 5
    table.state("b:1").load = 1
    table.state("c:1").healthy = False
    assert table.pick_endpoint(route) == "b:1"
    with table.lease("b:1"), table.lease("b:1"), table.lease("b:1"), table.lease("b:1"):
        table.state("b:1").load = 2
        assert table.pick_endpoint(route) == "a:1"


def test_local_default_routes_are_valid_model_routes() -> None:
    docs = local_default_routes("127.0.0.1:1", "small", "127.0.0.1:2", "large")
    routes = routes_from_objects(ModelRoute.model_validate(d) for d in docs)
    by_tier = {r.tier: r for r in routes}
    assert by_tier["slm"].endpoints == ("127.0.0.1:1",) and by_tier["slm"].model == "small"
    assert by_tier["slm"].fallback == by_tier["llm"].name
    assert by_tier["llm"].max_share == 0.3


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
    from gearshift.router.answers import AnswerFolder
    from gearshift.router.openai_params import choices_json, tool_call_deltas_json

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
