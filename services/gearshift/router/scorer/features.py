"""Cheap text features of a prompt, computed in microseconds from the raw text.

The embedding says *what* a prompt is about; these say *how* it is built: length, how
much arithmetic it carries, what kind of multiple-choice item it is (numeric options,
"Statement 1 |" pairs, two-scenario moral items, roman-numeral combinations),
negations ("NOT", "EXCEPT") and question structure. They are the signals a sentence
embedding smooths away and that track how often a weaker model slips. Pure format cues
(is it multiple choice, does it end in "Answer:") are deliberately absent: in the training
data they only identify the benchmark, and a model that learns "not multiple choice =
GSM8K = hard" would send every short chat message to the large tier.
"""

from __future__ import annotations

import math
import re

import numpy as np
import numpy.typing as npt

_NUMBER = re.compile(r"(?<![A-Za-z])[-+]?\$?\d[\d,]*(?:\.\d+)?%?")
_DIGIT = re.compile(r"\d")
_MATH = re.compile("[+\\-*/=^<>\u221a\u03c0\u2211\u222b\u2264\u2265\u00d7\u00f7]")
_WORD = re.compile(r"[A-Za-z']+")
_OPTION = re.compile(r"^\s*([A-D])[.)]\s*(.*)$", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
_ROMAN_COMBO = re.compile(r"\b(?:I{1,3}|IV)\s*(?:,|and|only)\b")
_NEGATION = re.compile(r"\b(?:NOT|EXCEPT|LEAST|FALSE|INCORRECT|not|except|least)\b")
_FORMULA = re.compile(r"\b(?:sqrt|log|sin|cos|tan|lim|mod|Z_\d+|\d+x|x\^\d)\b")
_MONEY = re.compile(r"\$\s?\d")
_PERCENT = re.compile(r"\d\s?%|percent")
_FRACTION = re.compile(r"\b\d+/\d+\b|\bhalf\b|\bthird\b|\bquarter\b|\btwice\b|\bthrice\b")
_TIME_UNITS = re.compile(r"\b(?:hours?|minutes?|days?|weeks?|months?|years?)\b", re.IGNORECASE)

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_question_words",
    "log_numbers",
    "digit_ratio",
    "log_math_symbols",
    "log_mean_option_chars",
    "numeric_option_share",
    "statement_pair",
    "scenario_pair",
    "roman_combination",
    "negation",
    "which_of_the_following",
    "log_sentences",
    "question_marks",
    "formula_tokens",
    "money",
    "percent",
    "fraction_words",
    "time_units",
    "upper_ratio",
    "blank_to_fill",
)

N_FEATURES = len(FEATURE_NAMES)


def _log1p(value: float) -> float:
    return math.log1p(max(0.0, value))


def text_features(text: str) -> npt.NDArray[np.float32]:
    """The feature vector (in `FEATURE_NAMES` order) of one prompt."""
    options = _OPTION.findall(text)
    is_mc = len(options) >= 3
    if is_mc:
        first = text.find("\nA")
        question = text[:first] if first > 0 else text
        option_texts = [body.strip() for _, body in options]
        numeric = sum(1 for body in option_texts if _DIGIT.search(body))
        mean_option = sum(len(body) for body in option_texts) / len(option_texts)
        numeric_share = numeric / len(option_texts)
    else:
        question = text
        mean_option = 0.0
        numeric_share = 0.0
    chars = len(text)
    words = _WORD.findall(text)
    letters = sum(1 for ch in text if ch.isalpha())
    upper = sum(1 for ch in text if ch.isupper())
    values = (
        _log1p(chars),
        _log1p(len(words)),
        _log1p(len(_WORD.findall(question))),
        _log1p(len(_NUMBER.findall(question))),
        len(_DIGIT.findall(text)) / max(1, chars),
        _log1p(len(_MATH.findall(text))),
        _log1p(mean_option),
        numeric_share,
        float("Statement 1" in text),
        float("Scenario 1" in text),
        float(bool(_ROMAN_COMBO.search(text))),
        float(bool(_NEGATION.search(question))),
        float("which of the following" in text.lower()),
        _log1p(len(_SENTENCE_END.findall(question))),
        min(3.0, float(text.count("?"))),
        _log1p(len(_FORMULA.findall(text))),
        float(bool(_MONEY.search(text))),
        float(bool(_PERCENT.search(text))),
        _log1p(len(_FRACTION.findall(text))),
        _log1p(len(_TIME_UNITS.findall(text))),
        upper / max(1, letters),
        float("____" in text or "___" in text),
    )
    return np.asarray(values, dtype=np.float32)


def text_features_many(texts: list[str]) -> npt.NDArray[np.float32]:
    """Stacked feature vectors, one row per prompt."""
    if not texts:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    return np.stack([text_features(t) for t in texts])
