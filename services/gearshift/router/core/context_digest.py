"""What, besides the question, changes an answer: the cache's context digest.

The semantic cache matches questions by meaning, so everything else that shapes the
answer must be part of the scope: the system prompt, the earlier turns, and the sampling
settings. Leaving any of these out lets one conversation's answer leak into another
(a common failure of semantic caches), so the digest errs on the side of including.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from gearshift.v1 import common_pb2

# OpenAI semantics: an unset temperature or top_p means 1.0, never greedy.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0


def effective_temperature(sampling: common_pb2.SamplingParams) -> float:
    """The temperature the backend will use (unset means 1.0, as in the OpenAI API)."""
    return float(sampling.temperature) if sampling.HasField("temperature") else DEFAULT_TEMPERATURE


def is_sampled(sampling: common_pb2.SamplingParams) -> bool:
    """True when the answer is random (temperature above 0, or unset)."""
    return effective_temperature(sampling) > 0.0


def question_text(messages: Sequence[common_pb2.ChatMessage]) -> str:
    """The question the cache and the scorer see: the last user turn."""
    for msg in reversed(messages):
        if msg.role == "user":
            return msg.content
    return ""


def context_digest(
    messages: Sequence[common_pb2.ChatMessage], sampling: common_pb2.SamplingParams
) -> str:
    """A stable hex digest of the system prompt, earlier turns and sampling settings.

    The last user turn (the question) is excluded: the cache compares it by meaning.
    `logprobs` and `top_logprobs` are excluded because they do not change the text (a
    logprobs request bypasses the cache anyway: request_options.py). Penalties, logit_bias
    and the response format (type and schema) are included when set.
    """
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    context = [[m.role, m.name, m.content] for i, m in enumerate(messages) if i != last_user]
    trailing_name = messages[last_user].name if last_user >= 0 else ""
    settings: dict[str, object] = {
        "temperature": round(effective_temperature(sampling), 4),
        "top_p": round(float(sampling.top_p), 4) if sampling.HasField("top_p") else DEFAULT_TOP_P,
        "max_tokens": int(sampling.max_tokens) if sampling.HasField("max_tokens") else None,
        "stop": sorted(sampling.stop),
        "seed": int(sampling.seed) if sampling.HasField("seed") else None,
    }
    # Options that change the answer, keyed only when set: requests without them keep the
    # digest (and so the cache entries) they had before these options existed.
    for name in ("presence_penalty", "frequency_penalty"):
        if sampling.HasField(name) and getattr(sampling, name) != 0.0:
            settings[name] = round(float(getattr(sampling, name)), 4)
    if sampling.logit_bias:
        settings["logit_bias"] = sorted((k, round(v, 4)) for k, v in sampling.logit_bias.items())
    fmt = sampling.response_format
    if fmt.type in ("json_object", "json_schema"):
        schema = json.loads(fmt.schema_json) if fmt.schema_json else None
        settings["response_format"] = [fmt.type, schema, fmt.strict]
    payload = json.dumps(
        {"context": context, "name": trailing_name, "sampling": settings},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
