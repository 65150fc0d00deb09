"""Whole answers (`Choice`) from streamed pieces, and the answers of a whole response.

The router folds a backend's chunks into a unary `Chat` answer and the proxy folds an
upstream's SSE events into a unary `Generate` answer; both join the same pieces the same
way: text in order, log-probabilities in order, tool-call deltas by the call's index.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from gearshift.v1 import common_pb2


@dataclass
class _Answer:
    text: list[str] = field(default_factory=list)
    finish_reason: common_pb2.FinishReason.ValueType = common_pb2.FINISH_REASON_UNSPECIFIED
    logprobs: list[common_pb2.TokenLogprob] = field(default_factory=list)
    calls: dict[int, common_pb2.ToolCall] = field(default_factory=dict)


class ChoiceAssembler:
    """Collects pieces by answer index (n > 1 gives several answers)."""

    def __init__(self) -> None:
        self._answers: dict[int, _Answer] = {}

    def add(
        self,
        index: int,
        text: str,
        finish_reason: common_pb2.FinishReason.ValueType,
        logprobs: Iterable[common_pb2.TokenLogprob],
        tool_calls: Iterable[common_pb2.ToolCallDelta],
    ) -> None:
        answer = self._answers.setdefault(index, _Answer())
        answer.text.append(text)
        answer.logprobs.extend(logprobs)
        if finish_reason:
            answer.finish_reason = finish_reason
        for piece in tool_calls:
            call = answer.calls.setdefault(piece.index, common_pb2.ToolCall())
            call.id = call.id or piece.id
            call.name = call.name or piece.name
            call.arguments += piece.arguments

    @property
    def finished(self) -> bool:
        """Every answer seen so far has its finish reason."""
        return bool(self._answers) and all(a.finish_reason for a in self._answers.values())

    def choices(self) -> list[common_pb2.Choice]:
        """The answers so far, by index."""
        return [
            common_pb2.Choice(
                index=i,
                text="".join(a.text),
                finish_reason=a.finish_reason,
                logprobs=a.logprobs,
                tool_calls=[a.calls[k] for k in sorted(a.calls)],
            )
            for i, a in sorted(self._answers.items())
        ]


class WholeAnswer(Protocol):
    """A unary response: its first answer in top-level fields, every answer in `choices`
    when there are several (`GenerateResponse`, `ChatResponse`)."""

    @property
    def text(self) -> str: ...
    @property
    def finish_reason(self) -> common_pb2.FinishReason.ValueType: ...
    @property
    def logprobs(self) -> Iterable[common_pb2.TokenLogprob]: ...
    @property
    def tool_calls(self) -> Iterable[common_pb2.ToolCall]: ...
    @property
    def choices(self) -> Iterable[common_pb2.Choice]: ...


def answer_choices(response: WholeAnswer) -> list[common_pb2.Choice]:
    """Every answer of a whole response (one, from its top-level fields, unless n > 1)."""
    return list(response.choices) or [
        common_pb2.Choice(
            text=response.text,
            finish_reason=response.finish_reason,
            logprobs=response.logprobs,
            tool_calls=response.tool_calls,
        )
    ]
