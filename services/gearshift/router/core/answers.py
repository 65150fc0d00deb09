"""Folds a routed answer's chunks into whole answers: text, tool calls, log-probabilities,
one per choice (n > 1). The unary `Chat` and the OpenAI JSON response are built from it."""

from __future__ import annotations

from gearshift.runtime.choices import ChoiceAssembler
from gearshift.v1 import common_pb2, router_pb2


class AnswerFolder:
    """Collects chunks by choice index; tool-call deltas are joined by their own index."""

    def __init__(self) -> None:
        self._choices = ChoiceAssembler()

    def add(self, chunk: router_pb2.ChatStreamChunk) -> None:
        self._choices.add(
            chunk.index, chunk.text_delta, chunk.finish_reason, chunk.logprobs, chunk.tool_calls
        )

    def choices(self) -> list[common_pb2.Choice]:
        return self._choices.choices()

    def fill(self, response: router_pb2.ChatResponse) -> None:
        """Sets text, finish reason, tool calls and logprobs (choice 0), and `choices` (n > 1)."""
        choices = self.choices() or [common_pb2.Choice()]
        first = choices[0]
        response.text = first.text
        response.finish_reason = first.finish_reason
        response.tool_calls.extend(first.tool_calls)
        response.logprobs.extend(first.logprobs)
        if len(choices) > 1:
            response.choices.extend(choices)
