"""The event the pipeline emits when it has given an answer, and who listens to it.

The executor's own output type, so it lives beside the executor: listeners (outcomes/)
import it, the executor does not import them. The pipeline calls `answered`
synchronously on the event loop right after an answer is complete; listeners must only
queue work (recording, shadow judging), never await.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gearshift.v1 import common_pb2


@dataclass(frozen=True)
class AnsweredEvent:
    """One generated answer with the decision that produced it."""

    tenant: str
    response_id: str
    question: str
    messages: Sequence[common_pb2.ChatMessage]
    embedding: list[float]
    difficulty: float
    threshold: float
    tier: str  # "slm" or "llm"
    route: str
    model: str
    answer: str
    finish_reason: int
    pinned: bool


class AnswerObserver(Protocol):
    """Something that wants to know about every generated answer (never blocks)."""

    def answered(self, event: AnsweredEvent) -> None: ...
