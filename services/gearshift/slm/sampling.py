"""Maps the contract's `SamplingParams` onto vLLM's, and fits a request into the context.

Defaults follow the contract (common.proto): an unset temperature is 1.0 and an unset
top_p is 1.0, as in the OpenAI API; temperature 0 is greedy. The context rule is
"clip, never refuse" for the answer: a prompt that leaves no room for even one token
is INVALID_ARGUMENT stating both counts, while a max_tokens larger than the room left
is clipped to that room (the answer then ends with finish reason LENGTH if it runs
that long).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gearshift.runtime.errors import FieldViolation, InvalidArgument
from gearshift.v1 import common_pb2

DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0


@dataclass(frozen=True)
class TokenBudget:
    """How many tokens the answer may have, and whether the caller's ask was clipped."""

    max_tokens: int
    clipped: bool


def token_budget(
    prompt_tokens: int, max_model_len: int, requested: int | None, default: int = 0
) -> TokenBudget:
    """Fits the answer into the context window.

    `requested` is the caller's max_tokens (None when unset); `default` (>0) replaces
    an unset value, 0 means "as many as fit", as the contract says.
    """
    room = max_model_len - prompt_tokens
    if room < 1:
        raise InvalidArgument(
            [
                FieldViolation(
                    "messages",
                    f"the prompt is {prompt_tokens} tokens after the chat template; the "
                    f"model's context is {max_model_len} tokens, which leaves no room for "
                    "an answer",
                )
            ]
        )
    wanted = requested if requested is not None else (default or room)
    return TokenBudget(max_tokens=min(wanted, room), clipped=wanted > room)


def structured_outputs(
    sampling: common_pb2.SamplingParams, forced_schema: dict[str, Any] | None = None
) -> Any:
    """vLLM structured outputs for a forced tool call or a `response_format`, else None.

    A forced tool call wins over the response format (as in vLLM's own server): the answer
    must then be the call's JSON.
    """
    from vllm.sampling_params import StructuredOutputsParams

    if forced_schema is not None:
        return StructuredOutputsParams(json=forced_schema)
    fmt = sampling.response_format
    if fmt.type == "json_object":
        return StructuredOutputsParams(json_object=True)
    if fmt.type == "json_schema":
        return StructuredOutputsParams(json=json.loads(fmt.schema_json))
    return None


def to_vllm(
    sampling: common_pb2.SamplingParams,
    max_tokens: int,
    *,
    delta: bool = True,
    forced_schema: dict[str, Any] | None = None,
    keep_special_tokens: bool = False,
) -> Any:
    """Builds `vllm.SamplingParams`; every contract field is carried over.

    `keep_special_tokens` keeps markers such as `<tool_call>` in the text, which some
    models mark special and a tool parser needs to see.
    """
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    return SamplingParams(
        n=max(1, sampling.n),
        presence_penalty=sampling.presence_penalty
        if sampling.HasField("presence_penalty")
        else 0.0,
        frequency_penalty=sampling.frequency_penalty
        if sampling.HasField("frequency_penalty")
        else 0.0,
        logit_bias=dict(sampling.logit_bias) or None,
        structured_outputs=structured_outputs(sampling, forced_schema),
        skip_special_tokens=not keep_special_tokens,
        max_tokens=max_tokens,
        temperature=sampling.temperature
        if sampling.HasField("temperature")
        else DEFAULT_TEMPERATURE,
        top_p=sampling.top_p if sampling.HasField("top_p") else DEFAULT_TOP_P,
        stop=list(sampling.stop) or None,
        seed=sampling.seed if sampling.HasField("seed") else None,
        logprobs=sampling.top_logprobs if sampling.logprobs else None,
        output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
    )
