"""Folds a routed answer's chunks into whole answers: text, tool calls, log-probabilities,
one per choice (n > 1). The unary `Chat` and the OpenAI JSON response are built from it."""

from __future__ import annotations

from gearshift.v1 import common_pb2, router_pb2


class AnswerFolder:
    """Collects chunks by choice index; tool-call deltas are joined by their own index."""

    def __init__(self) -> None:
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, common_pb2.FinishReason.ValueType] = {}
        self.logprobs: dict[int, list[common_pb2.TokenLogprob]] = {}
        self.calls: dict[int, dict[int, common_pb2.ToolCall]] = {}

    def add(self, chunk: router_pb2.ChatStreamChunk) -> None:
        i = chunk.index
        self.texts.setdefault(i, []).append(chunk.text_delta)
        self.logprobs.setdefault(i, []).extend(chunk.logprobs)
        if chunk.finish_reason:
            self.finish[i] = chunk.finish_reason
        calls = self.calls.setdefault(i, {})
        for delta in chunk.tool_calls:
            call = calls.setdefault(delta.index, common_pb2.ToolCall())
            call.id = call.id or delta.id
            call.name = call.name or delta.name
            call.arguments += delta.arguments

    def choices(self) -> list[common_pb2.Choice]:
        return [
            common_pb2.Choice(
                index=i,
                text="".join(self.texts[i]),
                finish_reason=self.finish.get(i, common_pb2.FINISH_REASON_UNSPECIFIED),
                logprobs=self.logprobs.get(i, []),
                tool_calls=[c for _, c in sorted(self.calls.get(i, {}).items())],
            )
            for i in sorted(self.texts)
        ]

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
