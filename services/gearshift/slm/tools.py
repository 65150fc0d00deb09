"""Tool calling on the SLM server, through vLLM's own OpenAI request model and tool parsers.

Two ways a call comes out of a small model:

* forced (`tool_choice` "required" or a named function): vLLM's
  `get_json_schema_from_tools` turns the tools into a JSON Schema, structured output makes
  the engine produce JSON that follows it, and the JSON becomes the calls. This works with
  any model, even one that has never seen a tool (SmolLM2-135M), because decoding cannot
  leave the schema; the arguments are only as sensible as the model.
* auto: the model decides, in its own format, and the tool parser configured for the
  served model (setting `tool_parser`, e.g. "hermes"; vLLM's `ToolParserManager` names)
  extracts the calls from the finished text. Without a parser the server cannot tell a
  call from text, so an auto request with tools is refused (FAILED_PRECONDITION) instead
  of being answered as if the tools were not there.

Streaming: the calls are parsed from the whole answer, so a streamed request with tools
holds the answer's text and sends it, with one delta per call, in the answer's last chunk
(valid OpenAI chunks; log-probabilities still stream as they come).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gearshift.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument
from gearshift.v1 import common_pb2, inference_pb2


@dataclass(frozen=True)
class ToolMode:
    """How this request's tools are served: "none", "auto" or "forced"."""

    kind: str
    request: Any = None  # vLLM's ChatCompletionRequest (tools parsed by vLLM), when tools apply
    schema: dict[str, Any] | None = None  # forced: the JSON Schema the answer must follow
    named: str = ""  # forced with a named function: its name


def tool_dicts(tools: Sequence[common_pb2.Tool]) -> list[dict[str, Any]]:
    """The contract's tools as OpenAI `tools` JSON (for vLLM's request model and templates)."""
    out = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        function["parameters"] = (
            json.loads(tool.parameters_json) if tool.parameters_json else {"type": "object"}
        )
        if tool.strict:
            function["strict"] = True
        out.append({"type": "function", "function": function})
    return out


def tool_choice_json(choice: common_pb2.ToolChoice) -> Any:
    if choice.mode == "function":
        return {"type": "function", "function": {"name": choice.function_name}}
    return choice.mode or "auto"


def tool_mode(request: inference_pb2.GenerateRequest, parser: str) -> ToolMode:
    """Which way the request's tools are served (validated by vLLM's own request model)."""
    choice = request.tool_choice.mode or "auto"
    if not request.tools or choice == "none":
        return ToolMode("none")
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers.utils import get_json_schema_from_tools

    body: dict[str, Any] = {
        "model": request.model or "model",
        "messages": [{"role": "user", "content": "-"}],
        "tools": tool_dicts(request.tools),
        "tool_choice": tool_choice_json(request.tool_choice),
    }
    if request.HasField("parallel_tool_calls"):
        body["parallel_tool_calls"] = request.parallel_tool_calls
    try:
        vllm_request = ChatCompletionRequest.model_validate(body)
    except ValueError as exc:
        raise InvalidArgument([FieldViolation("tools", str(exc)[:500])]) from None
    if choice in ("required", "function"):
        schema = get_json_schema_from_tools(
            vllm_request.tool_choice,  # type: ignore[arg-type]  # not "none": checked above
            vllm_request.tools,  # type: ignore[arg-type]  # a narrower list than it accepts
            vllm_request.parallel_tool_calls,
        )
        if isinstance(schema, str):
            schema = json.loads(schema)
        return ToolMode(
            "forced",
            vllm_request,
            schema=schema,
            named=request.tool_choice.function_name if choice == "function" else "",
        )
    if not parser:
        raise FailedPrecondition(
            "this SLM server has no tool parser for its model, so it cannot tell a tool "
            "call from text; set tool_choice to 'required' or a function (forced by "
            "structured output), or configure the server's tool_parser (e.g. hermes)",
            reason="NO_TOOL_PARSER",
        )
    return ToolMode("auto", vllm_request)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def forced_calls(mode: ToolMode, text: str) -> list[common_pb2.ToolCall]:
    """The calls in a forced answer: the named function's arguments, or a list of calls."""
    try:
        value = json.loads(text)
    except ValueError:
        return []  # cut off by max_tokens: the caller sees finish reason LENGTH and no call
    if mode.named:
        return [
            common_pb2.ToolCall(
                id=new_call_id(), name=mode.named, arguments=json.dumps(value, ensure_ascii=False)
            )
        ]
    calls = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            calls.append(
                common_pb2.ToolCall(
                    id=new_call_id(),
                    name=item["name"],
                    arguments=json.dumps(item.get("parameters", {}), ensure_ascii=False),
                )
            )
    return calls


def parsed_calls(
    mode: ToolMode, parser_name: str, tokenizer: Any, text: str
) -> tuple[str, list[common_pb2.ToolCall]]:
    """(content, calls) from an auto answer, by the configured vLLM tool parser."""
    from vllm.tool_parsers import ToolParserManager

    parser = ToolParserManager.get_tool_parser(parser_name)(tokenizer, mode.request.tools)
    info = parser.extract_tool_calls(text, mode.request)
    if not info.tools_called:
        return text, []
    calls = [
        common_pb2.ToolCall(
            id=getattr(c, "id", "") or new_call_id(),
            name=c.function.name,
            arguments=c.function.arguments,
        )
        for c in info.tool_calls
    ]
    return info.content or "", calls


def known_parser(name: str) -> bool:
    """True when vLLM has a tool parser of that name."""
    from vllm.tool_parsers import ToolParserManager

    try:
        ToolParserManager.get_tool_parser(name)
    except KeyError:
        return False
    return True
