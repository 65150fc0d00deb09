"""Validation of the message types every contract shares.

Returns every violation at once (not just the first), so a caller fixes its
request in one round trip.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from gearshift.runtime.errors import FieldViolation, InvalidArgument
from gearshift.v1 import common_pb2

ROLES = frozenset({"system", "user", "assistant", "tool"})
MAX_STOP_SEQUENCES = 8
MAX_TOP_LOGPROBS = 20
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOOL_CHOICE_MODES = frozenset({"", "auto", "none", "required", "function"})
MAX_CHOICES = 8  # n: each answer costs a whole generation
MAX_LOGIT_BIAS = 300  # entries, as in the OpenAI API
RESPONSE_FORMATS = frozenset({"", "text", "json_object", "json_schema"})


def message_violations(
    messages: Sequence[common_pb2.ChatMessage], path: str = "messages"
) -> list[FieldViolation]:
    """Checks roles, emptiness and that the conversation ends with a user turn."""
    out: list[FieldViolation] = []
    if not messages:
        return [FieldViolation(path, "at least one message is required")]
    for i, msg in enumerate(messages):
        if msg.role not in ROLES:
            out.append(
                FieldViolation(
                    f"{path}[{i}].role",
                    f"unknown role {msg.role!r}; use one of {', '.join(sorted(ROLES))}",
                )
            )
        if msg.role == "user" and not msg.content.strip():
            out.append(FieldViolation(f"{path}[{i}].content", "a user message must not be empty"))
        if msg.role == "tool" and not msg.tool_call_id:
            out.append(
                FieldViolation(
                    f"{path}[{i}].tool_call_id", "a tool message must name the call it answers"
                )
            )
        if msg.tool_calls and msg.role != "assistant":
            out.append(
                FieldViolation(f"{path}[{i}].tool_calls", "only assistant turns make tool calls")
            )
    return out


def sampling_violations(
    sampling: common_pb2.SamplingParams, path: str = "sampling"
) -> list[FieldViolation]:
    """Checks every bound the contract documents for sampling parameters."""
    out: list[FieldViolation] = []
    if sampling.HasField("max_tokens") and sampling.max_tokens == 0:
        out.append(FieldViolation(f"{path}.max_tokens", "must be at least 1 when set"))
    if sampling.HasField("temperature") and not 0.0 <= sampling.temperature <= 2.0:
        out.append(
            FieldViolation(f"{path}.temperature", f"{sampling.temperature:g} is outside [0, 2]")
        )
    if sampling.HasField("top_p") and not 0.0 < sampling.top_p <= 1.0:
        out.append(FieldViolation(f"{path}.top_p", f"{sampling.top_p:g} is outside (0, 1]"))
    if len(sampling.stop) > MAX_STOP_SEQUENCES:
        out.append(
            FieldViolation(
                f"{path}.stop", f"{len(sampling.stop)} stop strings; at most {MAX_STOP_SEQUENCES}"
            )
        )
    if any(not s for s in sampling.stop):
        out.append(FieldViolation(f"{path}.stop", "stop strings must not be empty"))
    if sampling.top_logprobs > MAX_TOP_LOGPROBS:
        out.append(
            FieldViolation(
                f"{path}.top_logprobs", f"{sampling.top_logprobs} is above {MAX_TOP_LOGPROBS}"
            )
        )
    if sampling.top_logprobs and not sampling.logprobs:
        out.append(FieldViolation(f"{path}.top_logprobs", "needs logprobs to be true"))
    for name in ("presence_penalty", "frequency_penalty"):
        if sampling.HasField(name) and not -2.0 <= getattr(sampling, name) <= 2.0:  # type: ignore[arg-type]
            out.append(
                FieldViolation(f"{path}.{name}", f"{getattr(sampling, name):g} is outside [-2, 2]")
            )
    if sampling.n > MAX_CHOICES:
        out.append(FieldViolation(f"{path}.n", f"{sampling.n} answers; at most {MAX_CHOICES}"))
    if len(sampling.logit_bias) > MAX_LOGIT_BIAS:
        out.append(
            FieldViolation(
                f"{path}.logit_bias",
                f"{len(sampling.logit_bias)} entries; at most {MAX_LOGIT_BIAS}",
            )
        )
    for token, bias in sampling.logit_bias.items():
        if token < 0 or not -100.0 <= bias <= 100.0:
            out.append(
                FieldViolation(
                    f"{path}.logit_bias",
                    f"token {token}: ids are >= 0 and biases in [-100, 100] (got {bias:g})",
                )
            )
            break
    out.extend(response_format_violations(sampling.response_format, f"{path}.response_format"))
    return out


def response_format_violations(
    fmt: common_pb2.ResponseFormat, path: str = "response_format"
) -> list[FieldViolation]:
    """A known type, and for json_schema a schema that is a JSON object."""
    if fmt.type not in RESPONSE_FORMATS:
        return [
            FieldViolation(
                f"{path}.type",
                f"unknown type {fmt.type!r}; use text, json_object or json_schema",
            )
        ]
    if fmt.type != "json_schema":
        return []
    try:
        schema = json.loads(fmt.schema_json or "null")
    except ValueError:
        return [FieldViolation(f"{path}.json_schema.schema", "is not valid JSON")]
    if not isinstance(schema, dict):
        return [FieldViolation(f"{path}.json_schema.schema", "must be a JSON Schema object")]
    return []


def tool_violations(
    tools: Sequence[common_pb2.Tool], choice: common_pb2.ToolChoice, path: str = "tools"
) -> list[FieldViolation]:
    """Named, distinct functions with object schemas, and a tool_choice that fits them."""
    out: list[FieldViolation] = []
    names = set()
    for i, tool in enumerate(tools):
        if not TOOL_NAME.match(tool.name):
            out.append(
                FieldViolation(
                    f"{path}[{i}].function.name",
                    "letters, digits, '_' and '-' only, 1 to 64 characters",
                )
            )
        if tool.name in names:
            out.append(FieldViolation(f"{path}[{i}].function.name", f"{tool.name!r} twice"))
        names.add(tool.name)
        if tool.parameters_json:
            try:
                params = json.loads(tool.parameters_json)
            except ValueError:
                params = None
            if not isinstance(params, dict):
                out.append(
                    FieldViolation(
                        f"{path}[{i}].function.parameters", "must be a JSON Schema object"
                    )
                )
    if choice.mode not in TOOL_CHOICE_MODES:
        out.append(
            FieldViolation(
                "tool_choice", "use 'none', 'auto', 'required' or {'type': 'function', ...}"
            )
        )
    elif choice.mode in ("required", "function") and not tools:
        out.append(FieldViolation("tool_choice", f"{choice.mode!r} needs tools"))
    elif choice.mode == "function" and choice.function_name not in names:
        out.append(
            FieldViolation(
                "tool_choice.function.name", f"{choice.function_name!r} is not among the tools"
            )
        )
    return out


def require_valid_chat(
    messages: Sequence[common_pb2.ChatMessage],
    sampling: common_pb2.SamplingParams,
    *,
    extra: Sequence[FieldViolation] = (),
    tools: Sequence[common_pb2.Tool] = (),
    tool_choice: common_pb2.ToolChoice | None = None,
) -> None:
    """Raises one InvalidArgument listing every problem with a chat request."""
    violations = [
        *message_violations(messages),
        *sampling_violations(sampling),
        *tool_violations(tools, tool_choice or common_pb2.ToolChoice()),
        *extra,
    ]
    if violations:
        raise InvalidArgument(violations)
