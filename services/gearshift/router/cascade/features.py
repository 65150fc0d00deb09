"""Cheap signals of a small model's answer, computed in microseconds from its text.

A judge prefers the large model's answer when the small one is short for what was
asked, does not engage (restates or parrots the question, refuses), breaks off
(no final punctuation, finish reason LENGTH), loops (repeated n-grams) or is unsure of
itself (low token log-probabilities, when the SLM server returns them). These are the
features of the escalation estimator (`gearshift.router.cascade.estimator`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"\w+")
_LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+", re.MULTILINE)
_HEADING = re.compile(r"^\s*(?:#{1,6}\s|\*\*[^*\n]+\*\*\s*:?\s*$)", re.MULTILINE)
_REFUSAL = re.compile(
    r"\b(?:I(?:'m| am) (?:sorry|unable|not able)|I can(?:not|'t) (?:help|assist|provide|answer)"
    r"|as an AI(?: language model)?|I do not have (?:access|the ability)"
    r"|I don't have (?:access|the ability))",
    re.IGNORECASE,
)
_TERMINAL = frozenset(".!?)\"'`*:;]}\u3002")

ANSWER_FEATURE_NAMES: tuple[str, ...] = (
    "log_answer_words",
    "log_answer_lines",
    "log_list_items",
    "log_headings",
    "code_block",
    "answer_to_prompt_words",
    "distinct_word_ratio",
    "repeated_trigram_share",
    "prompt_overlap",
    "refusal",
    "unfinished",
    "ends_with_question",
    "log_prompt_words",
    "truncated",
    "mean_logprob",
    "min_logprob",
    "has_logprobs",
)
N_ANSWER_FEATURES = len(ANSWER_FEATURE_NAMES)


@dataclass(frozen=True)
class AnswerSignals:
    """What the SLM server returned besides the text (all optional)."""

    finish_length: bool = False  # stopped at max_tokens
    logprobs: tuple[float, ...] = ()


def _log1p(value: float) -> float:
    return math.log1p(max(0.0, value))


def answer_features(
    prompt: str, answer: str, signals: AnswerSignals | None = None
) -> npt.NDArray[np.float32]:
    """The feature vector (in `ANSWER_FEATURE_NAMES` order) of one prompt and answer."""
    signals = signals or AnswerSignals()
    words = [w.lower() for w in _WORD.findall(answer)]
    prompt_words = [w.lower() for w in _WORD.findall(prompt)]
    n = len(words)
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    repeated = 1.0 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    prompt_set = set(prompt_words)
    overlap = sum(1 for w in words if w in prompt_set) / n if n else 1.0
    stripped = answer.rstrip()
    lps = signals.logprobs
    values = (
        _log1p(n),
        _log1p(stripped.count("\n") + 1 if stripped else 0),
        _log1p(len(_LIST_ITEM.findall(answer))),
        _log1p(len(_HEADING.findall(answer))),
        float("```" in answer),
        math.log((n + 1) / (len(prompt_words) + 1)),
        len(set(words)) / n if n else 0.0,
        repeated,
        overlap,
        float(bool(_REFUSAL.search(answer[:400]))),
        float(bool(stripped) and stripped[-1] not in _TERMINAL and not stripped[-1].isdigit()),
        float(stripped.endswith("?")),
        _log1p(len(prompt_words)),
        float(signals.finish_length),
        float(sum(lps) / len(lps)) if lps else 0.0,
        float(min(lps)) if lps else 0.0,
        float(bool(lps)),
    )
    return np.asarray(values, dtype=np.float32)


def answer_features_many(
    prompts: list[str], answers: list[str], signals: list[AnswerSignals] | None = None
) -> npt.NDArray[np.float32]:
    """Stacked feature vectors, one row per (prompt, answer)."""
    if not prompts:
        return np.zeros((0, N_ANSWER_FEATURES), dtype=np.float32)
    sig = signals or [AnswerSignals()] * len(prompts)
    return np.stack(
        [answer_features(p, a, s) for p, a, s in zip(prompts, answers, sig, strict=True)]
    )
