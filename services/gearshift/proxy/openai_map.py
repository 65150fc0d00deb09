"""Translation between the gRPC contract and OpenAI chat-completions JSON.

Parsing is defensive: any shape the contract cannot use raises `ValueError`, which the
dispatcher reports as the upstream's malformed answer rather than crashing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gearshift.v1 import common_pb2, inference_pb2

FINISH_REASONS = {
    "stop": common_pb2.FINISH_REASON_STOP,
    "eos": common_pb2.FINISH_REASON_STOP,
    "tool_calls": common_pb2.FINISH_REASON_STOP,
    "function_call": common_pb2.FINISH_REASON_STOP,
    "length": common_pb2.FINISH_REASON_LENGTH,
    "content_filter": common_pb2.FINISH_REASON_CONTENT_FILTER,
    "abort": common_pb2.FINISH_REASON_ABORT,
}


def request_body(
    request: inference_pb2.GenerateRequest, upstream_model: str, *, stream: bool
) -> dict[str, Any]:
    """The OpenAI request for a GenerateRequest; unset sampling fields stay unset."""
    messages: list[dict[str, str]] = []
    for m in request.messages:
        msg = {"role": m.role, "content": m.content}
        if m.name:
            msg["name"] = m.name
        messages.append(msg)
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
    if request.tenant:
        body["user"] = request.tenant  # providers use it for abuse monitoring
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


def parse_completion(data: dict[str, Any]) -> Completion:
    """A non-streamed chat completion. Raises ValueError/KeyError/TypeError on bad shape."""
    choices = data["choices"]
    if not isinstance(choices, list) or not choices:
        raise ValueError("no choices in the answer")
    choice = choices[0]
    message = choice["message"]
    text = message.get("content") or ""
    if not isinstance(text, str):
        raise ValueError("message.content is not a string")
    return Completion(
        text=text,
        finish_reason=finish_reason(choice.get("finish_reason")),
        logprobs=parse_logprobs(choice.get("logprobs")),
        usage=_usage_counts(data.get("usage")),
    )


@dataclass
class Delta:
    text: str = ""
    finish_reason: int = common_pb2.FINISH_REASON_UNSPECIFIED
    logprobs: list[common_pb2.TokenLogprob] = field(default_factory=list)
    usage: tuple[int, int] | None = None


def parse_chunk(event: dict[str, Any]) -> Delta:
    """One streamed event: a content delta, a finish reason, and/or the usage event."""
    out = Delta(usage=_usage_counts(event.get("usage")))
    choices = event.get("choices") or []
    if not isinstance(choices, list):
        raise ValueError("choices is not a list")
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        if not isinstance(text, str):
            raise ValueError("delta.content is not a string")
        out.text = text
        out.finish_reason = finish_reason(choice.get("finish_reason"))
        out.logprobs = parse_logprobs(choice.get("logprobs"))
    return out
