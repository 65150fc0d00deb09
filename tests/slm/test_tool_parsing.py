"""The SLM server's `auto` tool mode: vLLM's own tool parser reads the model's answer.

The embedded 135M model does not emit tool calls on its own, so the end-to-end tests cover
forced calls; this checks the part a tool-trained model would exercise, with the real
Hermes parser and the real tokenizer of the embedded model (what a route with
`capabilities.toolParser: hermes` runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from transformers import AutoTokenizer

from gearshift.runtime.errors import GearshiftError
from gearshift.slm.tools import known_parser, parsed_calls, tool_mode
from gearshift.v1 import common_pb2, inference_pb2

WEATHER = common_pb2.Tool(
    name="get_weather",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)


@pytest.fixture(scope="module")
def tokenizer(default_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(default_model_dir))


def _request(choice: str = "auto") -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content="Weather in Oslo and Rome?")],
        tools=[WEATHER],
        tool_choice=common_pb2.ToolChoice(mode=choice),
    )


def test_hermes_calls_are_read_from_an_auto_answer(tokenizer: Any) -> None:
    mode = tool_mode(_request(), "hermes")
    assert mode.kind == "auto"
    answer = (
        "Let me check both.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    )
    text, calls = parsed_calls(mode, "hermes", tokenizer, answer)
    assert text.strip() == "Let me check both."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert all(c.id for c in calls) and calls[0].id != calls[1].id


def test_an_auto_answer_without_a_call_stays_text(tokenizer: Any) -> None:
    mode = tool_mode(_request(), "hermes")
    assert parsed_calls(mode, "hermes", tokenizer, "It is sunny in Oslo.") == (
        "It is sunny in Oslo.",
        [],
    )


def test_auto_without_a_parser_is_failed_precondition_and_parsers_are_checked() -> None:
    with pytest.raises(GearshiftError) as err:
        tool_mode(_request(), "")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "tool_parser" in str(err.value)
    assert tool_mode(_request("required"), "").kind == "forced"  # no parser needed
    assert known_parser("hermes") and not known_parser("no-such-parser")
