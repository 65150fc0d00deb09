"""The two kinds of rows the outcome store keeps: decisions and their outcomes."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from gearshift.runtime.errors import GearshiftError

RESPONSE_ID_PREFIX = "chatcmpl-"
MAX_COMMENT = 2000
SOURCE_USER = "user"
SOURCE_JUDGE = "judge"


class AlreadyExists(GearshiftError):
    """A second outcome from the same source for one answer."""

    def __init__(self, message: str, reason: str = "ALREADY_EXISTS") -> None:
        super().__init__(message, reason, code=grpc.StatusCode.ALREADY_EXISTS)


def prompt_digest(text: str) -> str:
    """sha256 of the question, so identical prompts can be grouped without the text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def bare_response_id(value: str) -> str:
    """The response id without the OpenAI API's `chatcmpl-` prefix."""
    value = value.strip()
    return value[len(RESPONSE_ID_PREFIX) :] if value.startswith(RESPONSE_ID_PREFIX) else value


@dataclass(frozen=True)
class Decision:
    """How one answer was routed, recorded when it was given."""

    tenant: str
    response_id: str
    prompt: str  # the question text, or "" when only the digest is kept
    prompt_digest: str
    embedding: bytes  # float32 little-endian, empty when the query was not embedded
    difficulty: float
    threshold: float
    tier: str  # "slm" or "llm"
    route: str
    model: str
    created_at: float = field(default_factory=time.time)
    # Without the text, what retraining needs from it: the scorer's prompt features
    # (`gearshift.router.scorer.prompt_features`), float32 little-endian, and their
    # layout's version. Empty when the text is kept.
    features: bytes = b""
    features_version: str = ""

    def embedding_vector(self) -> np.ndarray:
        return np.frombuffer(self.embedding, dtype="<f4")


@dataclass(frozen=True)
class Outcome:
    """How an answer went: a score in [0, 1] from a user, a service or the shadow judge."""

    tenant: str
    response_id: str
    source: str  # "user" or "judge"
    score: float
    other_tier_better: bool | None = None  # None: not said
    comment: str = ""
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class LabelledDecision:
    """A decision joined with one of its outcomes (what retraining reads)."""

    decision: Decision
    outcome: Outcome
