"""The hit decision: which candidate, if any, a lookup serves, and why.

Candidates are judged nearest first. The nearest one decides the lookup unless it
shows a real difference (`gearshift.cache.differences`: numbers, a one-sided
negation, opposite words, other names); only then is the next one judged. So the
cache never serves a farther entry over a nearer one without a stated reason, and
among near-duplicate stored entries it serves the nearest.

A candidate without a real difference is judged by the operating point of its text
style, both picked for the same `max_false_hit_rate`:

- question pairs (both sides asked as questions): the tree verifier, calibrated on
  Quora question pairs, where high cosine alone serves many wrong hits;
- anything else (statements, instructions, mixed): cosine similarity, calibrated on
  the project's statement/instruction pairs, where the verifier's Quora habits
  reject most true paraphrases and cosine ranks them well.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.cache.differences import real_difference
from gearshift.cache.verifier import CalibrationPoint, Verifier

STATEMENT_CALIBRATION_FILE = Path(__file__).with_name("statement_calibration.npz")

FloatArray = npt.NDArray[np.float32]

_QUESTION_START = frozenset(
    """what why how when where who whom whose which is are am was were do does did can
    could should would will shall may might has have had""".split()
)
_FIRST_WORD = re.compile(r"[a-z']+")


def is_question(text: str) -> bool:
    """Asked as a question: ends with '?' or opens with a question word."""
    stripped = text.strip()
    if stripped.endswith("?"):
        return True
    first = _FIRST_WORD.match(stripped.lower())
    return bool(first and first.group(0) in _QUESTION_START)


def pair_style(question: str, candidate: str) -> str:
    """'question' when both sides are questions (the verifier's domain), else 'statement'."""
    return "question" if is_question(question) and is_question(candidate) else "statement"


@dataclass(frozen=True)
class Candidate:
    """A stored entry the search proposed: its question, vector and cosine to the lookup."""

    question: str
    vector: FloatArray
    similarity: float


@dataclass(frozen=True)
class Decision:
    """`served` is the index into the candidates, or None for a miss."""

    served: int | None
    judged: int | None = None
    similarity: float = 0.0
    confidence: float = 0.0
    style: str = ""
    reason: str = ""
    skipped: list[str] = field(default_factory=list)


def load_statement_calibration(path: Path = STATEMENT_CALIBRATION_FILE) -> list[CalibrationPoint]:
    """The cosine operating points written by `gearshift.learn.cache.calibrate_statements`."""
    with np.load(path, allow_pickle=False) as data:
        return [
            CalibrationPoint(float(t), float(f), float(r))
            for t, f, r in zip(
                data["cal_threshold"], data["cal_false_hit_rate"], data["cal_recall"], strict=True
            )
        ]


def pick_point(table: Sequence[CalibrationPoint], max_false_hit_rate: float) -> CalibrationPoint:
    """The most permissive calibrated point whose false-hit bound is within the bound."""
    ok = [p for p in table if p.false_hit_rate <= max_false_hit_rate]
    if not ok:
        return CalibrationPoint(1.01, 0.0, 0.0)  # nothing holds the bound: exact hits only
    return max(ok, key=lambda p: (p.recall, -p.threshold))


class HitDecider:
    """Decides a lookup among its candidates; see the module docstring."""

    def __init__(
        self,
        verifier: Verifier,
        max_false_hit_rate: float,
        min_similarity: float,
        statement_table: Sequence[CalibrationPoint] | None = None,
        difference: Callable[[str, str, bool], str] = real_difference,
    ) -> None:
        self.verifier = verifier
        # The real-difference check (replaceable so a benchmark can run a previous one).
        self.difference = difference
        self.min_similarity = min_similarity
        table = load_statement_calibration() if statement_table is None else statement_table
        self.question_point = verifier.threshold_for(max_false_hit_rate)
        self.statement_point = pick_point(table, max_false_hit_rate)

    def threshold(self, style: str) -> float:
        point = self.question_point if style == "question" else self.statement_point
        return point.threshold

    def decide(self, text: str, vector: FloatArray, candidates: Sequence[Candidate]) -> Decision:
        order = sorted(range(len(candidates)), key=lambda i: -candidates[i].similarity)
        skipped: list[str] = []
        for i in order:
            cand = candidates[i]
            if cand.similarity < self.min_similarity:
                break
            style = pair_style(text, cand.question)
            difference = self.difference(text, cand.question, style == "question")
            if difference:
                skipped.append(f"cosine {cand.similarity:.3f}: {difference}")
                continue
            if style == "question":
                confidence = float(
                    self.verifier.predict([text], [cand.question], vector, cand.vector)[0]
                )
                score_name = "verifier"
            else:
                confidence = cand.similarity
                score_name = "cosine"
            threshold = self.threshold(style)
            served = confidence >= threshold
            verdict = ">=" if served else "<"
            return Decision(
                served=i if served else None,
                judged=i,
                similarity=cand.similarity,
                confidence=confidence,
                style=style,
                reason=f"{style}: {score_name} {confidence:.3f} {verdict} {threshold:.3f}",
                skipped=skipped,
            )
        best = max((c.similarity for c in candidates), default=0.0)
        reason = "no candidate without a real difference" if skipped else "no candidate near enough"
        return Decision(served=None, similarity=best, reason=reason, skipped=skipped)
