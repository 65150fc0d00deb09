"""A chat request's options beyond the conversation: what they mean for the cache, for the
backend call and for the small-model cascade.

Cache rules (docs/router.md has the per-field table):

* bypassed (neither looked up nor stored): tool-using turns (tools offered, or tool calls /
  tool results in the conversation: an answer depends on tool output the cache cannot
  see, and a cached tool call would replay a side effect's request), `n` > 1 (several
  sampled answers are not one answer), and `logprobs` (a cached answer has none to give);
* keyed (part of the context digest, `context_digest.py`): penalties, `logit_bias` and
  `response_format` (its type and schema), beside temperature, top_p, max_tokens, stop
  and seed;
* ignored: `user`, `stream`, `stream_options`, `parallel_tool_calls` without tools.

A structured answer (json_object / json_schema) is stored only once it parses and
validates against the request's schema.
"""

from __future__ import annotations

import json
import logging

import jsonschema

from gearshift.router.core.capabilities import uses_tools
from gearshift.runtime.choices import answer_choices
from gearshift.runtime.errors import FieldViolation
from gearshift.v1 import common_pb2, inference_pb2, router_pb2

log = logging.getLogger(__name__)


def cache_bypass_reason(request: router_pb2.ChatRequest) -> str:
    """Why this request must skip the cache altogether ("" when it may use it)."""
    if uses_tools(request):
        return "tool-using turn"
    if request.sampling.n > 1:
        return f"n={request.sampling.n} answers requested"
    if request.sampling.logprobs:
        return "logprobs requested (a cached answer has none)"
    return ""


def generate_extras(request: router_pb2.ChatRequest) -> inference_pb2.GenerateRequest:
    """The request's fields a backend call carries beside messages and sampling."""
    extras = inference_pb2.GenerateRequest(tools=request.tools, user=request.user)
    if request.HasField("tool_choice"):
        extras.tool_choice.CopyFrom(request.tool_choice)
    if request.HasField("parallel_tool_calls"):
        extras.parallel_tool_calls = request.parallel_tool_calls
    return extras


def cascade_allowed(request: router_pb2.ChatRequest) -> bool:
    """The escalation judge reads one free-text answer: not tool calls, JSON or n answers."""
    fmt = request.sampling.response_format.type
    return not uses_tools(request) and request.sampling.n <= 1 and fmt in ("", "text")


def schema_violations(request: router_pb2.ChatRequest) -> list[FieldViolation]:
    """A json_schema response format must hold a valid JSON Schema (checked up front)."""
    fmt = request.sampling.response_format
    if fmt.type != "json_schema":
        return []
    try:
        schema = json.loads(fmt.schema_json)
    except ValueError:
        return []  # not JSON at all: the shared validation names it
    if not isinstance(schema, dict):
        return []
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [
            FieldViolation(
                "response_format.json_schema.schema",
                f"is not a valid JSON Schema: {exc.message[:200]}",
            )
        ]
    return []


def structured_answer_problem(fmt: common_pb2.ResponseFormat, answer: str) -> str:
    """Why a structured answer must not be cached ("" when it is valid, or not structured)."""
    if fmt.type not in ("json_object", "json_schema"):
        return ""
    try:
        value = json.loads(answer)
    except ValueError:
        return "the answer is not JSON"
    if fmt.type == "json_object":
        return "" if isinstance(value, dict) else "the answer is not a JSON object"
    try:
        jsonschema.validate(value, json.loads(fmt.schema_json))
    except jsonschema.ValidationError as exc:
        return f"the answer does not follow the schema: {exc.message[:200]}"
    except jsonschema.SchemaError as exc:
        return f"the schema is not a valid JSON Schema: {exc.message[:200]}"
    return ""


def unary_chunks(response: inference_pb2.GenerateResponse) -> list[inference_pb2.GenerateChunk]:
    """A whole answer as the chunks the executor's loop runs on: one per answer (n > 1),
    the usage on the last, tool calls as whole deltas."""
    choices = answer_choices(response)
    chunks = []
    for i, choice in enumerate(choices):
        chunk = inference_pb2.GenerateChunk(
            model=response.model,
            index=choice.index,
            text_delta=choice.text,
            logprobs=choice.logprobs,
            finish_reason=choice.finish_reason,
            tool_calls=[
                common_pb2.ToolCallDelta(index=j, id=c.id, name=c.name, arguments=c.arguments)
                for j, c in enumerate(choice.tool_calls)
            ],
        )
        if i == len(choices) - 1:
            chunk.usage.CopyFrom(response.usage)
        chunks.append(chunk)
    return chunks
