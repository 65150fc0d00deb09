"""Translation between the gRPC contract and OpenAI chat-completions JSON.

Parsing is defensive: any shape the contract cannot use raises `ValueError`, which the
dispatcher reports as the upstream's malformed answer rather than crashing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gearshift.runtime.choices import ChoiceAssembler
from gearshift.v1 import common_pb2, inference_pb2

FINISH_REASONS = {
    "stop": common_pb2.FINISH_REASON_STOP,
    "eos": common_pb2.FINISH_REASON_STOP,
    "tool_calls": common_pb2.FINISH_REASON_TOOL_CALLS,
    "function_call": common_pb2.FINISH_REASON_TOOL_CALLS,
    "length": common_pb2.FINISH_REASON_LENGTH,
    "content_filter": common_pb2.FINISH_REASON_CONTENT_FILTER,
    "abort": common_pb2.FINISH_REASON_ABORT,
}


def message_json(m: common_pb2.ChatMessage) -> dict[str, Any]:
    """One contract message as an OpenAI message (tool calls and tool results included)."""
    msg: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name:
        msg["name"] = m.name
    if m.tool_calls:  # content stays "", not null: templates that know no tools concatenate it
        msg["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id:
        msg["tool_call_id"] = m.tool_call_id
    return msg


def tools_json(tools: Sequence[common_pb2.Tool]) -> list[dict[str, Any]]:
    out = []
    for t in tools:
        function: dict[str, Any] = {"name": t.name}
        if t.description:
            function["description"] = t.description
        if t.parameters_json:
            function["parameters"] = json.loads(t.parameters_json)
        if t.strict:
            function["strict"] = True
        out.append({"type": "function", "function": function})
    return out


def response_format_json(fmt: common_pb2.ResponseFormat) -> dict[str, Any] | None:
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.type == "json_schema":
        schema: dict[str, Any] = {
            "name": fmt.name or "answer",
            "schema": json.loads(fmt.schema_json),
        }
        if fmt.strict:
            schema["strict"] = True
        return {"type": "json_schema", "json_schema": schema}
    return None


def request_body(
    request: inference_pb2.GenerateRequest, upstream_model: str, *, stream: bool
) -> dict[str, Any]:
    """The OpenAI request for a GenerateRequest; unset sampling fields stay unset."""
    messages = [message_json(m) for m in request.messages]
    body: dict[str, Any] = {"model": upstream_model, "messages": messages, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    s = request.sampling
    if s.HasField("max_tokens"):
        body["max_tokens"] = s.max_tokens
    if s.HasField("temperature"):
        body["temperature"] = round(s.temperature, 6)  # float32 -> the decimal the caller meant
    if s.HasField("top_p"):
        body["top_p"] = round(s.top_p, 6)
    if s.stop:
        body["stop"] = list(s.stop)
    if s.HasField("seed"):
        body["seed"] = s.seed
    if s.logprobs:
        body["logprobs"] = True
        if s.top_logprobs:
            body["top_logprobs"] = s.top_logprobs
    if s.HasField("presence_penalty"):
        body["presence_penalty"] = round(s.presence_penalty, 6)
    if s.HasField("frequency_penalty"):
        body["frequency_penalty"] = round(s.frequency_penalty, 6)
    if s.logit_bias:
        body["logit_bias"] = {str(k): round(v, 6) for k, v in sorted(s.logit_bias.items())}
    if s.n > 1:
        body["n"] = s.n
    if (fmt := response_format_json(s.response_format)) is not None:
        body["response_format"] = fmt
    if request.tools:
        body["tools"] = tools_json(request.tools)
        choice = request.tool_choice
        if choice.mode == "function":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.function_name}}
        elif choice.mode:
            body["tool_choice"] = choice.mode
        if request.HasField("parallel_tool_calls"):
            body["parallel_tool_calls"] = request.parallel_tool_calls
    # Providers use `user` for abuse monitoring: the end user when the caller named one,
    # else the tenant.
    if request.user or request.tenant:
        body["user"] = request.user or request.tenant
    return body


def finish_reason(value: Any) -> int:
    if value is None:
        return common_pb2.FINISH_REASON_UNSPECIFIED
    return FINISH_REASONS.get(str(value), common_pb2.FINISH_REASON_STOP)


def parse_logprobs(raw: Any) -> list[common_pb2.TokenLogprob]:
    """choices[i].logprobs.content -> TokenLogprob list."""
    if not raw:
        return []
    content = raw.get("content") if isinstance(raw, dict) else None
    if not content:
        return []
    out = []
    for item in content:
        top = [
            common_pb2.TopLogprob(token=str(t["token"]), logprob=float(t["logprob"]))
            for t in item.get("top_logprobs") or []
        ]
        out.append(
            common_pb2.TokenLogprob(
                token=str(item["token"]), logprob=float(item["logprob"]), top=top
            )
        )
    return out


def _usage_counts(raw: Any) -> tuple[int, int] | None:
    if not isinstance(raw, dict):
        return None
    return int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0)


@dataclass
class Completion:
    text: str
    finish_reason: int
    logprobs: list[common_pb2.TokenLogprob]
    usage: tuple[int, int] | None
    tool_calls: list[common_pb2.ToolCall] = field(default_factory=list)
    choices: list[common_pb2.Choice] = field(default_factory=list)  # every answer when n > 1


@dataclass
class Part:
    """What one stream event added to one answer."""

    index: int = 0
    text: str = ""
    finish_reason: int = common_pb2.FINISH_REASON_UNSPECIFIED
    logprobs: list[common_pb2.TokenLogprob] = field(default_factory=list)
    tool_calls: list[common_pb2.ToolCallDelta] = field(default_factory=list)


@dataclass
class Delta:
    """One stream event: a part per answer it touches, and/or the usage event."""

    parts: list[Part] = field(default_factory=list)
    usage: tuple[int, int] | None = None

    @property
    def has_output(self) -> bool:
        """Whether it carries answer text or a tool call (its time is the first token's)."""
        return any(p.text or p.tool_calls for p in self.parts)


def parse_tool_call_deltas(raw: Any) -> list[common_pb2.ToolCallDelta]:
    out = []
    for item in raw or []:
        function = item.get("function") or {}
        out.append(
            common_pb2.ToolCallDelta(
                index=int(item.get("index") or 0),
                id=str(item.get("id") or ""),
                name=str(function.get("name") or ""),
                arguments=str(function.get("arguments") or ""),
            )
        )
    return out


def completion_as_event(data: dict[str, Any]) -> dict[str, Any]:
    """A whole (non-streamed) chat completion as one stream event, for `parse_chunk`.

    Shapes it does not know are passed on as they are, for `parse_chunk` to refuse.
    """
    choices = data.get("choices")
    if not isinstance(choices, list):
        return {"choices": choices, "usage": data.get("usage")}
    events = []
    for choice in choices:
        if not isinstance(choice, dict):
            events.append(choice)
            continue
        message = choice.get("message") or {}
        delta = {"content": message.get("content")}
        calls = message.get("tool_calls") or []
        if isinstance(calls, list) and calls:
            delta["tool_calls"] = [
                {**call, "index": i} if isinstance(call, dict) else call
                for i, call in enumerate(calls)
            ]
        events.append(
            {
                "index": choice.get("index") or 0,
                "delta": delta,
                "finish_reason": choice.get("finish_reason"),
                "logprobs": choice.get("logprobs"),
            }
        )
    return {"choices": events, "usage": data.get("usage")}


def parse_chunk(event: dict[str, Any]) -> Delta:
    """One streamed event: content and tool-call deltas, finish reasons, and/or usage."""
    out = Delta(usage=_usage_counts(event.get("usage")))
    choices = event.get("choices") or []
    if not isinstance(choices, list):
        raise ValueError("choices is not a list")
    for choice in choices:
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        if not isinstance(text, str):
            raise ValueError("delta.content is not a string")
        out.parts.append(
            Part(
                index=int(choice.get("index") or 0),
                text=text,
                finish_reason=finish_reason(choice.get("finish_reason")),
                logprobs=parse_logprobs(choice.get("logprobs")),
                tool_calls=parse_tool_call_deltas(delta.get("tool_calls")),
            )
        )
    return out


class CompletionBuilder:
    """Puts a streamed answer back together as the completion a non-streamed call returns.

    The proxy streams from upstreams even for unary calls: a non-streamed answer arrives
    whole, so a long answer and a frozen upstream look the same until the answer is done.
    Streamed, the first event bounds the stall and a long answer takes what it needs.
    """

    def __init__(self) -> None:
        self._choices = ChoiceAssembler()
        self.usage: tuple[int, int] | None = None
        self.events = 0

    @property
    def finished(self) -> bool:
        """Every answer seen so far has its finish reason (only [DONE] may be missing)."""
        return self._choices.finished

    def add(self, delta: Delta) -> None:
        self.events += 1
        self.usage = delta.usage or self.usage
        for part in delta.parts:
            self._choices.add(
                part.index,
                part.text,
                part.finish_reason,  # type: ignore[arg-type]
                part.logprobs,
                part.tool_calls,
            )

    def completion(self) -> Completion:
        """The assembled answer; ValueError when the stream carried none."""
        choices = self._choices.choices()
        if not choices:
            raise ValueError("no choices in the answer")
        first = choices[0]
        return Completion(
            text=first.text,
            finish_reason=first.finish_reason,
            logprobs=list(first.logprobs),
            usage=self.usage,
            tool_calls=list(first.tool_calls),
            choices=choices if len(choices) > 1 else [],
        )
