"""Validation of the message types every contract shares.

Returns every violation at once (not just the first), so a caller fixes its
request in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence

from gearshift.runtime.errors import FieldViolation, InvalidArgument
from gearshift.v1 import common_pb2

ROLES = frozenset({"system", "user", "assistant", "tool"})
MAX_STOP_SEQUENCES = 8
MAX_TOP_LOGPROBS = 20


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
    return out


def require_valid_chat(
    messages: Sequence[common_pb2.ChatMessage],
    sampling: common_pb2.SamplingParams,
    *,
    extra: Sequence[FieldViolation] = (),
) -> None:
    """Raises one InvalidArgument listing every problem with a chat request."""
    violations = [*message_violations(messages), *sampling_violations(sampling), *extra]
    if violations:
        raise InvalidArgument(violations)
