"""The SLM server's OpenAI parity: n, penalties, logit_bias, structured output, tool calls.

Real gRPC, real vLLM CPU engine, the embedded SmolLM2-135M (the session's `slm_server`).
The small model cannot be trusted to *choose* a tool, so tool calls are tested forced
(`tool_choice` required or named), which structured output makes valid whatever the model.
"""

from __future__ import annotations

import json

import grpc
import jsonschema
import pytest

from gearshift.runtime.errors import field_violations
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from tests.fixtures.slm import SlmServer

pytestmark = pytest.mark.vllm

Stub = inference_pb2_grpc.InferenceServiceStub

WEATHER = common_pb2.Tool(
    name="get_weather",
    description="The current weather in a city.",
    parameters_json=json.dumps(
        {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        }
    ),
)
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def request(
    question: str, max_tokens: int = 16, **sampling: object
) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content=question)],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, **sampling),  # type: ignore[arg-type]
    )


async def test_n_gives_that_many_answers(slm_stub: Stub) -> None:
    req = request("Name a colour.", max_tokens=8, n=2, temperature=1.0, seed=7)
    reply = await slm_stub.Generate(req, timeout=60)
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.text and c.finish_reason for c in reply.choices)
    assert reply.text == reply.choices[0].text
    chunks = [c async for c in slm_stub.GenerateStream(req, timeout=60)]
    assert {c.index for c in chunks} == {0, 1}
    assert sum(1 for c in chunks if c.finish_reason) == 2  # one end per answer
    assert chunks[-1].HasField("usage") and chunks[-1].finish_reason
    assert chunks[-1].usage.completion_tokens >= 2


async def test_logit_bias_and_penalties_change_the_answer(
    slm_server: SlmServer, slm_stub: Stub
) -> None:
    question = "Count: 1, 2, 3,"
    plain = await slm_stub.Generate(request(question, temperature=0.0, logprobs=True), timeout=60)
    first = plain.logprobs[0].token
    [first_id] = slm_server.engine.tokenizer.encode(first, add_special_tokens=False)[:1]
    banned = await slm_stub.Generate(
        request(question, temperature=0.0, logprobs=True, logit_bias={first_id: -100.0}),
        timeout=60,
    )
    assert banned.logprobs[0].token != first
    long_plain = await slm_stub.Generate(
        request(question, max_tokens=32, temperature=0.0), timeout=60
    )
    penalised = await slm_stub.Generate(
        request(question, max_tokens=32, temperature=0.0, frequency_penalty=2.0), timeout=60
    )
    assert penalised.text != long_plain.text


async def test_out_of_range_penalty_is_invalid_argument(slm_stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await slm_stub.Generate(request("Hi", presence_penalty=3.0), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(err.value)] == ["sampling.presence_penalty"]


async def test_json_schema_answer_validates(slm_stub: Stub) -> None:
    fmt = common_pb2.ResponseFormat(
        type="json_schema", name="person", schema_json=json.dumps(PERSON), strict=True
    )
    reply = await slm_stub.Generate(
        request("Describe a person as JSON.", max_tokens=64, temperature=0.0, response_format=fmt),
        timeout=60,
    )
    assert reply.finish_reason == common_pb2.FINISH_REASON_STOP, reply.text
    jsonschema.validate(json.loads(reply.text), PERSON)


async def test_forced_tool_call_unary_and_streamed(slm_stub: Stub) -> None:
    req = request("What is the weather in Paris?", max_tokens=48, temperature=0.0)
    req.tools.append(WEATHER)
    req.tool_choice.CopyFrom(common_pb2.ToolChoice(mode="function", function_name="get_weather"))
    reply = await slm_stub.Generate(req, timeout=60)
    assert reply.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    [call] = reply.tool_calls
    assert call.name == "get_weather" and call.id.startswith("call_")
    assert set(json.loads(call.arguments)) == {"city"}
    assert reply.text == ""

    req.tool_choice.CopyFrom(common_pb2.ToolChoice(mode="required"))
    req.parallel_tool_calls = False
    chunks = [c async for c in slm_stub.GenerateStream(req, timeout=60)]
    deltas = [d for c in chunks for d in c.tool_calls]
    assert [d.name for d in deltas] == ["get_weather"]
    assert "city" in json.loads(deltas[0].arguments)
    assert chunks[-1].finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS


async def test_auto_tools_without_a_parser_are_refused(slm_stub: Stub) -> None:
    req = request("What is the weather in Paris?")
    req.tools.append(WEATHER)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await slm_stub.Generate(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "tool parser" in (err.value.details() or "")


def test_openai_options_map_onto_vllm_sampling_params() -> None:
    from gearshift.slm.sampling import to_vllm

    fmt = common_pb2.ResponseFormat(type="json_schema", schema_json=json.dumps(PERSON))
    params = to_vllm(
        common_pb2.SamplingParams(
            n=3,
            presence_penalty=0.5,
            frequency_penalty=-1.0,
            logit_bias={11: 5.0},
            response_format=fmt,
        ),
        16,
    )
    assert (params.n, params.presence_penalty, params.frequency_penalty) == (3, 0.5, -1.0)
    assert params.logit_bias == {11: 5.0}
    assert params.structured_outputs.json == PERSON
    plain = to_vllm(common_pb2.SamplingParams(), 16)
    assert plain.structured_outputs is None and plain.n == 1 and plain.presence_penalty == 0.0
    forced = to_vllm(common_pb2.SamplingParams(response_format=fmt), 16, forced_schema={"a": 1})
    assert forced.structured_outputs.json == {"a": 1}  # a forced tool call wins
    json_object = common_pb2.ResponseFormat(type="json_object")
    assert to_vllm(
        common_pb2.SamplingParams(response_format=json_object), 8
    ).structured_outputs.json_object
