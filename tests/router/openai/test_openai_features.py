"""What OpenAI SDK users and agent frameworks send, through the real router.

The session's router (tests/router/conftest.py) fronts the real SLM server (vLLM engine,
SmolLM2-135M, route `local-slm`: jsonSchema, no tools) and the LLM proxy over vLLM's own
OpenAI server (route `local-llm`: tools, started with the Hermes tool parser). The tiny
model cannot choose a tool by itself, so calls are forced (`tool_choice` named or
"required"): vLLM constrains them to valid calls, which tests the plumbing end to end.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import openai
import pytest

from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2, router_pb2
from tests.router.conftest import (
    KEY_A,
    LLM_ROUTE,
    SLM_ROUTE,
    RunningRouter,
    start_router,
    stop_router,
)

pytestmark = pytest.mark.vllm

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        # strict: vLLM's server then holds the arguments to the schema, not only the call's
        # envelope (the tiny model fills free-form arguments with anything).
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def unique(text: str) -> str:
    return f"{text} (ref {uuid.uuid4().hex[:8]})"


def client(router: RunningRouter) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=router.http_base, api_key=KEY_A, max_retries=0, timeout=120)


async def test_tool_round_trip_call_result_answer(router: RunningRouter) -> None:
    sdk = client(router)
    messages: list[Any] = [{"role": "user", "content": unique("What is the weather in Paris?")}]
    raw = await sdk.chat.completions.with_raw_response.create(
        model="auto",
        messages=messages,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=64,
    )
    first = raw.parse()
    # The slm route has no tools capability: it is skipped, whatever the difficulty.
    assert raw.headers["x-gearshift-route"] == LLM_ROUTE
    assert raw.headers["x-gearshift-excluded"] == f"{SLM_ROUTE}(tools)"
    assert raw.headers["x-gearshift-cache"] == "bypass"
    choice = first.choices[0]
    assert choice.finish_reason in ("tool_calls", "stop")
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and call.id
    assert isinstance(json.loads(call.function.arguments)["city"], str)

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C"})
    final = await sdk.chat.completions.create(
        model="auto",
        messages=messages,
        tools=[WEATHER],
        tool_choice="none",
        temperature=0,
        max_tokens=24,
    )
    answer = final.choices[0]
    assert answer.message.content and not answer.message.tool_calls
    assert answer.finish_reason in ("stop", "length")


async def test_streamed_tool_calls_arrive_as_openai_deltas(router: RunningRouter) -> None:
    stream = await client(router).chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": unique("Weather in Oslo and Rome?")}],
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=64,
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    finish, usage = None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = call["id"] or (delta.id or "")
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    assert calls, "no tool-call deltas were streamed"
    for call in calls.values():
        assert call["id"] and call["name"] == "get_weather"
        assert "city" in json.loads(call["arguments"])
    assert finish in ("tool_calls", "stop")
    assert usage is not None and usage.completion_tokens > 0


async def test_json_schema_answer_validates_and_is_cached_per_schema(
    router: RunningRouter,
) -> None:
    sdk = client(router)
    question = unique("Invent a person and describe them.")
    fmt: Any = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": True},
    }
    raw = await sdk.chat.completions.with_raw_response.create(
        model=SLM_ROUTE,  # the embedded model, through vLLM structured outputs
        messages=[{"role": "user", "content": question}],
        response_format=fmt,
        temperature=0,
        max_tokens=64,
    )
    answer = raw.parse().choices[0]
    assert answer.finish_reason == "stop", answer.message.content
    jsonschema.validate(json.loads(answer.message.content or ""), PERSON)
    assert raw.headers["x-gearshift-cache"] == "miss"

    async def again(schema: dict[str, Any]) -> Any:
        fmt["json_schema"]["schema"] = schema
        for _ in range(20):  # the store is in the background: wait until it landed
            await asyncio.sleep(0.2)
            raw = await sdk.chat.completions.with_raw_response.create(
                model=SLM_ROUTE,
                messages=[{"role": "user", "content": question}],
                response_format=fmt,
                temperature=0,
                max_tokens=64,
                extra_headers={"x-gearshift-cache-policy": "no-store"},
            )
            if raw.headers["x-gearshift-cache"].startswith("hit") or schema != PERSON:
                return raw
        return raw

    hit = await again(PERSON)
    assert hit.headers["x-gearshift-cache"] == "hit_exact"
    assert hit.parse().choices[0].message.content == answer.message.content
    other = {**PERSON, "properties": {**PERSON["properties"], "city": {"type": "string"}}}
    assert (await again(other)).headers["x-gearshift-cache"] == "miss"  # another schema


async def test_n_answers_logprobs_and_penalties(router: RunningRouter) -> None:
    sdk = client(router)
    raw = await sdk.chat.completions.with_raw_response.create(
        model=SLM_ROUTE,
        messages=[{"role": "user", "content": unique("Name a fruit.")}],
        n=2,
        temperature=1.0,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        max_tokens=8,
    )
    completion = raw.parse()
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content for c in completion.choices)
    assert raw.headers["x-gearshift-cache"] == "bypass"

    stream = await sdk.chat.completions.create(
        model=LLM_ROUTE,  # n through the proxy to the upstream, streamed
        messages=[{"role": "user", "content": unique("Name a colour.")}],
        n=2,
        temperature=1.0,
        max_tokens=8,
        stream=True,
    )
    seen: dict[int, str] = {}
    ended: set[int] = set()
    async for chunk in stream:
        for choice in chunk.choices:
            seen[choice.index] = seen.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                ended.add(choice.index)
    assert set(seen) == ended == {0, 1} and all(seen.values())

    for model in (SLM_ROUTE, LLM_ROUTE):
        raw = await sdk.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": unique("Say hello.")}],
            logprobs=True,
            top_logprobs=2,
            temperature=0,
            max_tokens=6,
        )
        assert raw.headers["x-gearshift-cache"] == "bypass"  # a cached answer has none
        content = raw.parse().choices[0].logprobs.content  # type: ignore[union-attr]
        assert content and all(len(t.top_logprobs) == 2 for t in content), model
        assert all(t.logprob <= 0 for t in content)


@pytest.fixture
async def plain_router(
    router: RunningRouter, slm_server: Any, proxy_server: Any, tmp_path: Path
) -> Any:
    """A second router over the same services whose routes declare no tools."""
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    routes[1]["spec"]["capabilities"] = {"tools": False, "jsonSchema": False}
    running = await start_router(tmp_path, routes)
    try:
        yield running
    finally:
        await stop_router(running)


async def test_no_route_with_the_capability_is_a_400_naming_it(plain_router: RunningRouter) -> None:
    sdk = client(plain_router)
    with pytest.raises(openai.BadRequestError) as err:
        await sdk.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER],
        )
    assert err.value.code == "capability_missing"
    assert "tool calling" in err.value.message and "lacks tools" in err.value.message
    # JSON output: the slm route still has it, so it answers instead of failing.
    raw = await sdk.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": unique("A person as JSON.")}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=32,
    )
    assert raw.headers["x-gearshift-route"] == SLM_ROUTE
    assert raw.headers["x-gearshift-excluded"] == f"{LLM_ROUTE}(jsonSchema)"
    # The gRPC API refuses the same way, with FAILED_PRECONDITION.
    request = router_pb2.ChatRequest(
        messages=[common_pb2.ChatMessage(role="user", content="Weather?")],
        tools=[common_pb2.Tool(name="get_weather")],
    )
    with pytest.raises(grpc.aio.AioRpcError) as rpc:
        await plain_router.stub.Chat(
            request, metadata=[("authorization", f"Bearer {KEY_A}")], timeout=30
        )
    assert rpc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "tools" in (rpc.value.details() or "")
