"""Fast checks of the OpenAI door's pure parsing: bodies become contract fields."""

from __future__ import annotations

import json

import pytest

from gearshift.router.openai.protocol import parse_chat_request
from gearshift.runtime.errors import InvalidArgument
from gearshift.v1 import router_pb2


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
