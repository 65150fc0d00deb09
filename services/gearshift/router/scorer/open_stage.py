"""The scorer's second stage: difficulty of prompts unlike the benchmark traffic.

The first stage (ridge on MMLU / GSM8K outcomes) is trustworthy only near that traffic.
For everything else it used to return one constant "easy" gain, so a third of real
prompts shared the same score and a proof scored like "hi". This stage is a ridge over
the embedding and open-task cues (proof / derivation / code / analysis verbs, code
markers, greetings) fitted on the hand-written anchor prompts (`learn/scorer/anchors.py`, both
shippable), mapped onto the first stage's gain scale between its `lo` and `hi` gains.
The scorer blends the two stages by the same familiarity weight that used to pick the
constant, so benchmark-like prompts keep the first stage's score.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gearshift.router.scorer.features import text_features

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


_WORD = re.compile(r"[A-Za-z']+")
_HARD_VERBS = re.compile(
    r"\b(?:prove|proof|derive|derivation|implement|design|architect|analy[sz]e|optimi[sz]e|"
    r"refactor|debug|algorithm|complexity|theorem|lemma|equation|integral|rigorous|"
    r"step[- ]by[- ]step|trade-?offs?|evaluate|justify|formal(?:ly)?|estimate)\b",
    re.IGNORECASE,
)
_TASK_VERBS = re.compile(
    r"\b(?:write|explain|compare|describe|summari[sz]e|create|generate|list|plan|draft|"
    r"solve|calculate|compute)\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"```|\bdef |\bclass |#include|\bfunction\b|=>|;\s*$|\{\s*$", re.MULTILINE)
_SMALL_TALK = re.compile(
    r"^\s*(?:hi|hello|hey|yo|thanks?|thank you|ok(?:ay)?|cool|bye|good (?:morning|"
    r"evening|night|afternoon)|how are you|nice|great|lol|sorry|yes|no)\b",
    re.IGNORECASE,
)

OPEN_FEATURE_NAMES: tuple[str, ...] = (
    "log_words",
    "log_hard_verbs",
    "log_task_verbs",
    "code_markers",
    "small_talk",
    "at_most_three_words",
    "log_lines",
)


def open_text_features(text: str) -> F32:
    """Open-task cues, then the first stage's text features (one row)."""
    words = _WORD.findall(text)
    own = (
        math.log1p(len(words)),
        math.log1p(len(_HARD_VERBS.findall(text))),
        math.log1p(len(_TASK_VERBS.findall(text))),
        float(bool(_CODE.search(text))),
        float(bool(_SMALL_TALK.match(text))),
        float(len(words) <= 3),
        math.log1p(text.count("\n")),
    )
    return np.concatenate([np.asarray(own, dtype=np.float32), text_features(text)])


def open_design(embeddings: F32, texts: list[str]) -> F32:
    feats = np.stack([open_text_features(t) for t in texts]) if texts else np.zeros((0, 0))
    return open_design_from_features(embeddings, feats.astype(np.float32))


def open_design_from_features(embeddings: F32, features: F32) -> F32:
    """The design rows from precomputed `open_text_features` rows (no text needed)."""
    out: F32 = np.concatenate([embeddings, features], axis=1).astype(np.float32)
    return out


@dataclass(frozen=True)
class OpenStage:
    """Ridge on (embedding, open-task cues) -> hardness in about [0, 1], mapped to a gain."""

    coef: F32
    intercept: float
    lo: float  # first-stage gain of an "easy" prompt (hardness 0)
    hi: float  # first-stage gain of a clearly hard one (hardness 1)

    def hardness(self, design_rows: F32) -> F64:
        out: F64 = np.clip(design_rows.astype(np.float64) @ self.coef + self.intercept, -0.5, 1.5)
        return out

    def gain(self, embeddings: F32, texts: list[str]) -> F64:
        return self.gain_from_design(open_design(embeddings, texts))

    def gain_from_design(self, design_rows: F32) -> F64:
        out: F64 = self.lo + (self.hi - self.lo) * self.hardness(design_rows)
        return out
