"""The proxy's small parts in isolation: config, breaker, rate limiter, Retry-After, keys."""

from __future__ import annotations

import email.utils
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from multidict import CIMultiDict
from pydantic import ValidationError

from gearshift.proxy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from gearshift.proxy.config import ProxyConfig, RateLimitConfig, load_config, local_standin_config
from gearshift.proxy.keys import REDACTOR, KeySource, MissingKey, RedactingFilter
from gearshift.proxy.ratelimit import RateLimiter
from gearshift.proxy.upstream import parse_retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_local_standin_config_round_trips_through_yaml(tmp_path: Path) -> None:
    raw = local_standin_config("http://127.0.0.1:8000/v1", "smollm2", "standin-large")
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    model = config.model("standin-large")
    assert model is not None and "stand-in" in model.description
    assert model.upstreams[0].model == "smollm2"
    assert not model.upstreams[0].api_key_file and not model.upstreams[0].api_key_env


@pytest.mark.parametrize(
    "upstream, needle",
    [
        ({"api_key_file": "/k", "api_key_env": "K"}, "at most one"),
        ({"base_url": "ftp://x"}, "http"),
        ({"weight": 0}, "weight"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_config_errors_name_the_problem(upstream: dict[str, object], needle: str) -> None:
    base = {"name": "u", "base_url": "http://127.0.0.1:1/v1", "model": "m", **upstream}
    with pytest.raises(ValidationError) as err:
        ProxyConfig.model_validate({"models": [{"name": "big", "upstreams": [base]}]})
    assert needle in str(err.value)


def test_duplicate_upstream_names_are_refused() -> None:
    u = {"name": "u", "base_url": "http://127.0.0.1:1/v1", "model": "m"}
    with pytest.raises(ValidationError, match="unique"):
        ProxyConfig.model_validate({"models": [{"name": "big", "upstreams": [u, u]}]})


def test_breaker_state_machine() -> None:
    clock = FakeClock()
    seen: list[int] = []
    b = CircuitBreaker(failure_threshold=3, cooldown_s=10, on_change=seen.append, clock=clock)
    for _ in range(2):
        assert b.try_acquire()
        b.record_failure()
    assert b.state == CLOSED
    b.record_success()  # a success resets the count
    for _ in range(3):
        assert b.try_acquire()
        b.record_failure()
    assert b.state == OPEN and not b.try_acquire()
    assert b.retry_in_s() == pytest.approx(10)
    clock.now += 10
    assert b.state == HALF_OPEN
    assert b.try_acquire()  # the probe
    assert not b.try_acquire()  # only one at a time
    b.record_failure()  # probe failed: open again for a full cool-down
    assert b.state == OPEN
    clock.now += 10
    assert b.try_acquire()
    b.release()  # probe cancelled: another may go
    assert b.try_acquire()
    b.record_success()
    assert b.state == CLOSED and b.consecutive_failures == 0
    assert seen == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_rate_limiter_buckets_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        RateLimitConfig.model_validate({"default": {"requests_per_minute": 60}}), clock
    )
    for _ in range(60):
        assert limiter.admit("t", 10) is None
    refusal = limiter.admit("t", 10)
    assert refusal is not None and refusal.kind == "requests"
    assert refusal.retry_after_s == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.admit("t", 10) is None


def test_token_debt_blocks_until_repaid() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        RateLimitConfig.model_validate({"default": {"tokens_per_minute": 600}}), clock
    )
    assert limiter.admit("t", 100) is None
    limiter.settle("t", 100, 1200)  # the answer was much longer than estimated: debt of 600
    refusal = limiter.admit("t", 10)
    assert refusal is not None and refusal.kind == "tokens"
    assert refusal.retry_after_s == pytest.approx(61.0)
    clock.now += 61.0
    assert limiter.admit("t", 10) is None


def test_retry_after_forms() -> None:
    assert parse_retry_after(CIMultiDict({"Retry-After": "3"})) == 3.0
    assert parse_retry_after(CIMultiDict({"retry-after-ms": "250"})) == 0.25
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    delay = parse_retry_after(CIMultiDict({"Retry-After": when}))
    assert delay is not None and 25 < delay <= 30
    assert parse_retry_after(CIMultiDict({"Retry-After": "soon"})) is None
    assert parse_retry_after(CIMultiDict({})) is None


def test_key_file_rotation_and_redaction(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("sk-first-key-123\n")
    source = KeySource(file=str(path))
    assert source.get() == "sk-first-key-123"
    assert "sk-first" not in repr(source)
    path.write_text("sk-second-key-456")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert source.get() == "sk-second-key-456"
    assert REDACTOR.redact("got sk-second-key-456!") == "got [REDACTED]!"
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "key=%s", ("sk-first-key-123",), None
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == "key=[REDACTED]"
    path.unlink()
    with pytest.raises(MissingKey) as err:
        source.get()
    assert str(path) in str(err.value) and "sk-" not in str(err.value)


def test_openai_options_map_onto_the_upstream_request_and_back() -> None:
    from gearshift.proxy import openai_map
    from gearshift.v1 import common_pb2, inference_pb2

    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    request = inference_pb2.GenerateRequest(
        tenant="team-a",
        user="alice",
        messages=[
            common_pb2.ChatMessage(role="user", content="weather?"),
            common_pb2.ChatMessage(
                role="assistant",
                tool_calls=[common_pb2.ToolCall(id="c1", name="w", arguments='{"city":"Oslo"}')],
            ),
            common_pb2.ChatMessage(role="tool", tool_call_id="c1", content="sunny"),
        ],
        sampling=common_pb2.SamplingParams(
            presence_penalty=0.5,
            logit_bias={42: -100.0},
            n=2,
            response_format=common_pb2.ResponseFormat(
                type="json_schema", name="s", schema_json='{"type": "object"}', strict=True
            ),
        ),
        tools=[common_pb2.Tool(name="w", parameters_json=json.dumps(schema))],
        tool_choice=common_pb2.ToolChoice(mode="function", function_name="w"),
        parallel_tool_calls=False,
    )
    body = openai_map.request_body(request, "up-model", stream=False)
    assert body["messages"][1]["tool_calls"][0]["function"] == {
        "name": "w",
        "arguments": '{"city":"Oslo"}',
    }
    assert body["messages"][2]["tool_call_id"] == "c1"
    assert body["presence_penalty"] == 0.5 and "frequency_penalty" not in body
    assert body["logit_bias"] == {"42": -100.0} and body["n"] == 2
    assert body["response_format"]["json_schema"] == {
        "name": "s",
        "schema": {"type": "object"},
        "strict": True,
    }
    assert body["tools"][0]["function"]["parameters"] == schema
    assert body["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert body["parallel_tool_calls"] is False and body["user"] == "alice"

    # A unary call is streamed from the upstream and put back together: two answers
    # (n=2) in interleaved events, a tool call whose arguments come in pieces, usage last.
    builder = openai_map.CompletionBuilder()
    events: list[dict[str, Any]] = [
        {"choices": [{"index": 1, "delta": {"content": "b"}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c9", "function": {"name": "w", "arguments": '{"ci'}}
                        ]
                    },
                }
            ]
        },
        {"choices": [{"index": 1, "delta": {"content": "ee"}, "finish_reason": "stop"}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty":1}'}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        },
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}},
    ]
    for event in events:
        assert not builder.finished or event is events[-1]
        builder.add(openai_map.parse_chunk(event))
    assert builder.finished
    done = builder.completion()
    assert done.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    assert [(c.id, c.name, c.arguments) for c in done.tool_calls] == [("c9", "w", '{"city":1}')]
    assert [c.index for c in done.choices] == [0, 1] and done.choices[1].text == "bee"
    assert done.usage == (5, 7)
    with pytest.raises(ValueError):
        openai_map.CompletionBuilder().completion()  # a stream without any answer
    delta = openai_map.parse_chunk(
        {
            "choices": [
                {
                    "index": 1,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
                }
            ]
        }
    )
    [part] = delta.parts
    assert part.index == 1 and part.tool_calls[0].arguments == "{"
