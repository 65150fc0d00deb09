"""The OpenAI chat-completion fields beyond the basic ones, both ways.

In: tools, tool_choice, parallel_tool_calls, assistant `tool_calls`, `tool` messages,
response_format, presence/frequency penalties, logit_bias, n and user become the
contract's fields (type-checked here, range-checked by the shared validation so gRPC
callers meet the same rules). Out: tool calls, several choices and log-probabilities in
OpenAI's JSON, whole and as stream deltas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from gearshift.runtime.choices import answer_choices
from gearshift.runtime.errors import FieldViolation
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
