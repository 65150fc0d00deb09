"""The event the pipeline emits when it has given an answer, and who listens to it.

The pipeline calls `answered` synchronously on the event loop right after an answer is
complete; listeners must only queue work (recording, shadow judging), never await.
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


class RecordDecisions:
    """Queues each answer's decision in the recorder."""

    def __init__(self, recorder: RecorderLike) -> None:
        self.recorder = recorder

    def answered(self, event: AnsweredEvent) -> None:
        self.recorder.record(
            tenant=event.tenant,
            response_id=event.response_id,
            question=event.question,
            embedding=event.embedding,
            difficulty=event.difficulty,
            threshold=event.threshold,
            tier=event.tier,
            route=event.route,
            model=event.model,
        )


class RecorderLike(Protocol):
    def record(
        self,
        *,
        tenant: str,
        response_id: str,
        question: str,
        embedding: list[float],
        difficulty: float,
        threshold: float,
        tier: str,
        route: str,
        model: str,
    ) -> None: ...
