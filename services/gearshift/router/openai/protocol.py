"""The OpenAI wire protocol, pure: OpenAI JSON <-> the router's protos, both ways.

No aiohttp here (http.py holds the handlers): what a chat-completion or feedback body
means as a `ChatRequest` / `FeedbackRequest` (parse_chat_request, parse_feedback), what
a `RouteDecision` looks like as `x-gearshift-*` headers and as the `gearshift` / `multi`
extensions of a response, and which status and error type a `GearshiftError` maps to.

The fields beyond the basic ones. In: tools, tool_choice, parallel_tool_calls, assistant
`tool_calls`, `tool` messages, response_format, presence/frequency penalties, logit_bias,
n and user become the contract's fields (type-checked here, range-checked by the shared
validation so gRPC callers meet the same rules). Out: tool calls, several choices and
log-probabilities in OpenAI's JSON, whole and as stream deltas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from gearshift.router.limits import (
    INT64_MAX,
    INT64_MIN,
    InputLimits,
    float_violation,
    integer_violation,
)
from gearshift.router.multi.policy import HEADER as MULTI_HEADER
from gearshift.router.multi.policy import MultiLimits, parse_header, policy_from_proto
from gearshift.runtime.choices import answer_choices
from gearshift.runtime.errors import (
    FieldViolation,
    GearshiftError,
    InvalidArgument,
)
from gearshift.v1 import common_pb2, router_pb2

FINISH = {
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
    common_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    common_pb2.FINISH_REASON_ABORT: "abort",
    common_pb2.FINISH_REASON_ERROR: "error",
    common_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
}


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_tool_calls(
    raw: Any, path: str, violations: list[FieldViolation]
) -> list[common_pb2.ToolCall]:
    """An assistant message's `tool_calls`."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        violations.append(FieldViolation(path, "must be a list of tool calls"))
        return []
    calls = []
    for j, item in enumerate(raw):
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            violations.append(
                FieldViolation(
                    f"{path}[{j}]",
                    "must be {'id', 'type': 'function', 'function': {'name', 'arguments'}}",
                )
            )
            continue
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = _json_text(arguments)
        calls.append(
            common_pb2.ToolCall(
                id=str(item.get("id") or ""), name=function["name"], arguments=arguments
            )
        )
    return calls


def parse_tools(
    body: Mapping[str, Any], request: router_pb2.ChatRequest, violations: list[FieldViolation]
) -> None:
    """`tools`, `tool_choice` and `parallel_tool_calls`."""
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        violations.append(FieldViolation("tools", "must be a list of tools"))
        tools = []
    for i, tool in enumerate(tools or []):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type", "function") != "function"
            or not isinstance(function, Mapping)
        ):
            violations.append(
                FieldViolation(f"tools[{i}]", "must be {'type': 'function', 'function': {...}}")
            )
            continue
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            violations.append(
                FieldViolation(f"tools[{i}].function.parameters", "must be a JSON Schema object")
            )
            parameters = None
        request.tools.append(
            common_pb2.Tool(
                name=str(function.get("name") or ""),
                description=str(function.get("description") or ""),
                parameters_json=_json_text(parameters) if parameters is not None else "",
                strict=bool(function.get("strict") or False),
            )
        )
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        request.tool_choice.mode = choice
    elif isinstance(choice, Mapping):
        function = choice.get("function")
        if choice.get("type") == "function" and isinstance(function, Mapping):
            request.tool_choice.mode = "function"
            request.tool_choice.function_name = str(function.get("name") or "")
        else:
            violations.append(
                FieldViolation(
                    "tool_choice", "must be {'type': 'function', 'function': {'name': ...}}"
                )
            )
    elif choice is not None:
        violations.append(FieldViolation("tool_choice", "must be a string or an object"))
    parallel = body.get("parallel_tool_calls")
    if isinstance(parallel, bool):
        request.parallel_tool_calls = parallel
    elif parallel is not None:
        violations.append(FieldViolation("parallel_tool_calls", "must be true or false"))


def parse_response_format(
    body: Mapping[str, Any], sampling: common_pb2.SamplingParams, violations: list[FieldViolation]
) -> None:
    raw = body.get("response_format")
    if raw is None:
        return
    if not isinstance(raw, Mapping) or not isinstance(raw.get("type"), str):
        violations.append(
            FieldViolation(
                "response_format", "must be {'type': 'text' | 'json_object' | 'json_schema', ...}"
            )
        )
        return
    fmt = sampling.response_format
    fmt.type = raw["type"]
    if fmt.type != "json_schema":
        return
    spec = raw.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
        violations.append(
            FieldViolation("response_format.json_schema.schema", "a JSON Schema object is required")
        )
        return
    fmt.name = str(spec.get("name") or "")
    fmt.schema_json = _json_text(spec["schema"])
    fmt.strict = bool(spec.get("strict") or False)


def parse_sampling_extras(
    body: Mapping[str, Any], sampling: common_pb2.SamplingParams, violations: list[FieldViolation]
) -> None:
    """Penalties, logit_bias and n (ranges are checked by the shared validation)."""
    for name in ("presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not -1e6 < value < 1e6:
            violations.append(FieldViolation(name, "must be a number in [-2, 2]"))
        else:
            setattr(sampling, name, float(value))
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, Mapping):
            violations.append(FieldViolation("logit_bias", "must map token ids to numbers"))
        else:
            for key, value in bias.items():
                if (
                    not str(key).isdigit()
                    or int(key) >= 2**31
                    or isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not -1e6 < value < 1e6
                ):
                    violations.append(
                        FieldViolation(
                            "logit_bias",
                            f"{key!r}: keys are token ids, values numbers in [-100, 100]",
                        )
                    )
                    break
                sampling.logit_bias[int(key)] = float(value)
    n = body.get("n")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
            violations.append(FieldViolation("n", "must be an integer from 1 to 8"))
        else:
            sampling.n = n


def parse_options(
    body: Mapping[str, Any], request: router_pb2.ChatRequest, violations: list[FieldViolation]
) -> None:
    """Every option this module handles, onto `request`."""
    parse_tools(body, request, violations)
    parse_response_format(body, request.sampling, violations)
    parse_sampling_extras(body, request.sampling, violations)
    user = body.get("user")
    if isinstance(user, str):
        request.user = user[:256]
    elif user is not None:
        violations.append(FieldViolation("user", "must be a string"))


# --- out -------------------------------------------------------------------------------


def tool_calls_json(calls: Sequence[common_pb2.ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def tool_call_deltas_json(deltas: Sequence[common_pb2.ToolCallDelta]) -> list[dict[str, Any]]:
    out = []
    for d in deltas:
        function: dict[str, str] = {"arguments": d.arguments}
        item: dict[str, Any] = {"index": d.index, "function": function}
        if d.id:
            item["id"] = d.id
            item["type"] = "function"
        if d.name:
            function["name"] = d.name
        out.append(item)
    return out


def _token_bytes(token: str) -> list[int]:
    return list(token.encode("utf-8"))


def logprobs_json(logprobs: Sequence[common_pb2.TokenLogprob]) -> dict[str, Any]:
    """OpenAI's `choices[i].logprobs`: {"content": [{token, logprob, bytes, top_logprobs}]}."""
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": _token_bytes(lp.token),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": _token_bytes(t.token)}
                    for t in lp.top
                ],
            }
            for lp in logprobs
        ],
        "refusal": None,
    }


def choice_json(choice: common_pb2.Choice, want_logprobs: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.text}
    if choice.tool_calls:
        message["content"] = choice.text or None
        message["tool_calls"] = tool_calls_json(choice.tool_calls)
    return {
        "index": choice.index,
        "message": message,
        "finish_reason": FINISH.get(choice.finish_reason, "stop"),
        "logprobs": logprobs_json(choice.logprobs) if want_logprobs else None,
    }


def choices_json(response: router_pb2.ChatResponse, want_logprobs: bool) -> list[dict[str, Any]]:
    """Every choice of a routed answer (one unless n > 1)."""
    choices = answer_choices(response)
    return [choice_json(c, want_logprobs) for c in choices]


HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


ERROR_TYPE = {
    400: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
}


CACHE_POLICIES = {
    "": router_pb2.CACHE_POLICY_UNSPECIFIED,
    "default": router_pb2.CACHE_POLICY_UNSPECIFIED,
    "bypass": router_pb2.CACHE_POLICY_BYPASS,
    "no-store": router_pb2.CACHE_POLICY_NO_STORE,
    "refresh": router_pb2.CACHE_POLICY_REFRESH,
}


CACHE_POLICY_HEADER = "x-gearshift-cache-policy"


DEFAULT_LIMITS = InputLimits()


class UnsupportedMediaType(GearshiftError):
    """HTTP 415: the body is not declared as JSON."""

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"content-type {content_type or '(none)'!r} is not supported; send application/json",
            "UNSUPPORTED_MEDIA_TYPE",
            code=grpc.StatusCode.INVALID_ARGUMENT,
        )


def _content(value: Any, path: str, violations: list[FieldViolation]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, Mapping) and part.get("type") in ("image_url", "input_image"):
                violations.append(
                    FieldViolation(
                        f"{path}[{j}]",
                        "image input is not carried by the router's contract yet (capability "
                        "vision); send text parts only",
                    )
                )
            else:
                violations.append(FieldViolation(f"{path}[{j}]", "only text parts are supported"))
        return "".join(texts)
    violations.append(FieldViolation(path, "must be a string or a list of text parts"))
    return ""


def _number(body: Mapping[str, Any], name: str, violations: list[FieldViolation]) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        violations.append(FieldViolation(name, "must be a number"))
        return None
    return value


# Parameters that change what the answer must be, which the router's contract cannot
# carry: answering without them would look like success and be wrong (a legacy function
# call answered as text, audio never produced). Neutral values are accepted.
UNSUPPORTED_PARAMS: dict[str, str] = {
    "functions": "legacy function calling is not supported; send `tools` instead",
    "function_call": "legacy function calling is not supported; send `tool_choice` instead",
    "audio": "audio output is not supported",
    "modalities": "only ['text'] is supported",
    "prediction": "predicted outputs are not supported",
}


_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "modalities": (["text"],),
    "functions": ([],),
    "function_call": ("none", "auto"),
}


def unsupported_params(body: Mapping[str, Any]) -> list[FieldViolation]:
    """Violations for parameters set to a value the router would otherwise ignore."""
    return [
        FieldViolation(name, f"{why} (set drop_unsupported_params to ignore it)")
        for name, why in UNSUPPORTED_PARAMS.items()
        if body.get(name) is not None and body.get(name) not in _NEUTRAL.get(name, ())
    ]


def parse_chat_request(
    body: Any,
    headers: Mapping[str, str],
    drop_unsupported: bool = False,
    limits: InputLimits = DEFAULT_LIMITS,
    multi_limits: MultiLimits | None = None,
) -> tuple[router_pb2.ChatRequest, bool]:
    """An OpenAI chat completion body as a router ChatRequest, plus whether to stream.

    Parameters the router cannot honour are refused with their names, unless
    `drop_unsupported` (LiteLLM's `drop_params`) says to ignore them. The
    `x-gearshift-multi` header becomes the request's multi-routing policy (its values
    checked against `multi_limits`, so a 400 names the header, not the gRPC field).
    """
    if not isinstance(body, Mapping):
        raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
    violations: list[FieldViolation] = [] if drop_unsupported else unsupported_params(body)
    request = router_pb2.ChatRequest(
        request_id=headers.get("x-request-id", ""), model=str(body.get("model") or "auto")
    )
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        violations.append(FieldViolation("messages", "must be a list of messages"))
        raw_messages = []
    for i, msg in enumerate(raw_messages):
        if not isinstance(msg, Mapping):
            violations.append(FieldViolation(f"messages[{i}]", "must be an object"))
            continue
        request.messages.append(
            common_pb2.ChatMessage(
                role=str(msg.get("role", "")),
                content=_content(msg.get("content"), f"messages[{i}].content", violations),
                name=str(msg.get("name") or ""),
                tool_calls=parse_tool_calls(
                    msg.get("tool_calls"), f"messages[{i}].tool_calls", violations
                ),
                tool_call_id=str(msg.get("tool_call_id") or ""),
            )
        )
    parse_options(body, request, violations)
    sampling = request.sampling
    # Every number is range-checked before it meets a protobuf field: an integer of 2**64
    # or 1e400 would otherwise raise inside the conversion (a 500, not the client's 400).
    if (temperature := _number(body, "temperature", violations)) is not None:
        if (bad := float_violation("temperature", temperature)) is None:
            sampling.temperature = float(temperature)
        else:
            violations.append(bad)
    if (top_p := _number(body, "top_p", violations)) is not None:
        if (bad := float_violation("top_p", top_p)) is None:
            sampling.top_p = float(top_p)
        else:
            violations.append(bad)
    max_tokens_name = "max_completion_tokens"
    max_tokens = _number(body, max_tokens_name, violations)
    if max_tokens is None:
        max_tokens_name = "max_tokens"
        max_tokens = _number(body, max_tokens_name, violations)
    if max_tokens is not None:
        if (bad := integer_violation(max_tokens_name, max_tokens, 1, 2**32 - 1)) is not None:
            violations.append(bad)
        elif max_tokens > limits.max_tokens_limit:
            violations.append(limits.max_tokens_violation(max_tokens_name))
        else:
            sampling.max_tokens = int(max_tokens)
    if (seed := _number(body, "seed", violations)) is not None:
        if (bad := integer_violation("seed", seed, INT64_MIN, INT64_MAX)) is None:
            sampling.seed = int(seed)
        else:
            violations.append(bad)
    stop = body.get("stop")
    if isinstance(stop, str):
        sampling.stop.append(stop)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        sampling.stop.extend(stop)
    elif stop is not None:
        violations.append(FieldViolation("stop", "must be a string or a list of strings"))
    sampling.logprobs = bool(body.get("logprobs") or False)
    if (top_logprobs := _number(body, "top_logprobs", violations)) is not None:
        if (bad := integer_violation("top_logprobs", top_logprobs, 0, 20)) is None:
            sampling.top_logprobs = int(top_logprobs)
        else:
            violations.append(bad)
    policy = headers.get(CACHE_POLICY_HEADER, "").lower()
    if policy not in CACHE_POLICIES:
        violations.append(
            FieldViolation(CACHE_POLICY_HEADER, f"use one of {', '.join(sorted(CACHE_POLICIES))}")
        )
    else:
        request.cache_policy = CACHE_POLICIES[policy]
    multi = headers.get(MULTI_HEADER)
    if multi is not None:
        try:
            request.multi.CopyFrom(parse_header(multi))
            if multi_limits is not None:
                policy_from_proto(request.multi, multi_limits, prefix=MULTI_HEADER)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    if violations:
        raise InvalidArgument(violations)
    return request, bool(body.get("stream") or False)


def decision_headers(
    decision: router_pb2.RouteDecision, trace_id: str, request_id: str
) -> dict[str, str]:
    headers = {
        "x-gearshift-route": decision.route,
        "x-gearshift-tier": common_pb2.Tier.Name(decision.tier).removeprefix("TIER_").lower(),
        "x-gearshift-cache": common_pb2.CacheOutcome.Name(decision.cache)
        .removeprefix("CACHE_OUTCOME_")
        .lower(),
        "x-gearshift-difficulty": f"{decision.difficulty:.4f}",
        "x-gearshift-threshold": f"{decision.threshold:.4f}",
        "x-gearshift-trace-id": trace_id,
        "x-request-id": request_id,
    }
    if decision.response_id:
        headers["x-gearshift-response-id"] = decision.response_id
    if decision.escalated_from:
        headers["x-gearshift-escalated-from"] = ",".join(decision.escalated_from)
    if decision.source:
        headers["x-gearshift-source"] = decision.source
    if decision.excluded:  # routes left out for a missing capability: "local-slm(tools)"
        headers["x-gearshift-excluded"] = ",".join(
            f"{e.route}({'+'.join(e.missing)})" for e in decision.excluded
        )
    if decision.branches:
        headers["x-gearshift-branches"] = ",".join(
            f"{b.name}={b.status}" for b in decision.branches
        )
        headers["x-gearshift-combine"] = decision.combine
    return headers


def multi_extension(decision: router_pb2.RouteDecision) -> dict[str, Any]:
    """A multi-route answer's plan and outcome: every branch, the combination."""
    return {
        "combine": decision.combine,
        "combine_reason": decision.combine_reason,
        "combined_by": decision.combined_by,
        "branches": [
            {
                "name": b.name,
                "kind": b.kind,
                "route": b.route,
                "model": b.model,
                "tier": common_pb2.Tier.Name(b.tier).removeprefix("TIER_").lower(),
                "status": b.status,
                "error": b.error,
                "latency_ms": round(b.latency_ms, 1),
                "usage": {**usage_json(b.usage), "cost_usd": round(b.usage.cost_usd, 8)},
                "score": round(b.score, 6),
            }
            for b in decision.branches
        ],
    }


def gearshift_extension(
    source: str,
    citations: Sequence[router_pb2.Citation],
    decision: router_pb2.RouteDecision | None = None,
) -> dict[str, Any] | None:
    """The `gearshift` extension field: citations of a source answer, a multi-route plan.

    None when there is neither. OpenAI clients ignore unknown top-level fields; the SDKs
    keep them (`model_extra`).
    """
    multi = multi_extension(decision) if decision is not None and decision.branches else None
    if not citations:
        return {"multi": multi} if multi else None
    out: dict[str, Any] = {
        "source": source,
        "citations": [
            {
                "source": c.source,
                "document": c.document_id,
                "document_title": c.document_title,
                "chunk_title": c.chunk_title,
                "chunk_index": c.chunk_index,
                "score": round(c.score, 6),
            }
            for c in citations
        ],
    }
    if multi:
        out["multi"] = multi
    return out


def usage_json(usage: common_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_id(decision: router_pb2.RouteDecision, request_id: str) -> str:
    """The OpenAI `id`: `chatcmpl-` + the response id that feedback refers to."""
    return f"chatcmpl-{decision.response_id or request_id}"


def parse_feedback(body: Any) -> router_pb2.FeedbackRequest:
    """A `POST /v1/feedback` body as a FeedbackRequest (types checked, range checked later).

    `{"id": "chatcmpl-...", "score": 0.8}` or `{"id": ..., "rating": "good"|"bad"}`
    (or `"good": true`), optional `other_tier_better` and `comment`.
    """
    if not isinstance(body, Mapping):
        raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
    violations: list[FieldViolation] = []
    request = router_pb2.FeedbackRequest()
    response_id = body.get("id", body.get("response_id"))
    if not isinstance(response_id, str) or not response_id:
        violations.append(FieldViolation("id", "the answer's id (chatcmpl-...) is required"))
    else:
        request.response_id = response_id
    score = body.get("score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float):
            violations.append(FieldViolation("score", "must be a number in [0, 1]"))
        else:
            request.score = float(score)
    rating = body.get("rating", body.get("good"))
    if rating is not None:
        if rating in ("good", "bad"):
            request.good = rating == "good"
        elif isinstance(rating, bool):
            request.good = rating
        else:
            violations.append(FieldViolation("rating", "must be 'good' or 'bad'"))
    other = body.get("other_tier_better")
    if isinstance(other, bool):
        request.other_tier_better = other
    elif other is not None:
        violations.append(FieldViolation("other_tier_better", "must be true or false"))
    comment = body.get("comment", "")
    if not isinstance(comment, str):
        violations.append(FieldViolation("comment", "must be a string"))
    else:
        request.comment = comment
    if violations:
        raise InvalidArgument(violations)
    return request


def model_name(decision: router_pb2.RouteDecision) -> str:
    return decision.model or decision.route
