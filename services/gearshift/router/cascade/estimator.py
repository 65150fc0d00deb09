"""Answer-aware escalation: is the small model's answer good enough, or ask the large tier?

Prompt-only difficulty is nearly blind on real traffic; the small model's answer is where
the signal is. The estimator maps the prompt, the answer and what the SLM server returned
with it (finish reason, token log-probabilities) to `escalate`, the probability that the
large model's answer would be preferred, and escalates when it is at or above a threshold
calibrated like the difficulty threshold: the (1 - x) quantile of the estimator's values
on reference answers sends about x of answered requests up.

Model: a linear score over standardised answer features (`cascade/features.py`) plus a
few length bins (judges' preference for length is not linear), through a logistic map.
numpy only, about 50 µs per answer. `gearshift.learn.cascade.fit.fit_escalation(prompts,
answers, good)` fits the same model on any labelled answers (a deployment's recorded
outcomes, for example).

The shipped weights are *not* fitted on the AlpacaEval answers (CC BY-NC): their
coefficients are a hand-set prior (`PRIOR`, applied by `learn/cascade/fit.py`'s
`prior_weights`), and AlpacaEval only calibrates the logistic map and the share
quantiles. docs/scorer.md has the figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.router.cascade.features import (
    ANSWER_FEATURE_NAMES,
    AnswerSignals,
    answer_features,
    answer_features_many,
)
from gearshift.router.scorer.calibration import Calibration

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
DEFAULT_ESCALATION_WEIGHTS = Path(__file__).with_name("weights.npz")

# Step features ("value above edge") for the inputs whose effect is not monotone-linear.
BINS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("log_answer_words", (2.0, 3.0, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5)),
    ("answer_to_prompt_words", (-1.0, 0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)),
    ("log_prompt_words", (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)),
    ("log_answer_lines", (0.7, 1.1, 1.6, 2.0, 2.5, 3.0)),
)
_INDEX = {name: i for i, name in enumerate(ANSWER_FEATURE_NAMES)}
DESIGN_NAMES: tuple[str, ...] = ANSWER_FEATURE_NAMES + tuple(
    f"{name}>{edge:g}" for name, edges in BINS for edge in edges
)

# The hand-set prior (in units of each feature's standard deviation): escalate short,
# unstructured answers that parrot the question, loop, refuse, break off, or that the
# model itself was unsure of. Signs follow what judges reward; sizes are round numbers.
PRIOR: dict[str, float] = {
    "log_answer_words": -1.0,
    "log_answer_lines": -0.3,
    "log_list_items": -0.3,
    "log_headings": -0.3,
    "distinct_word_ratio": -0.3,
    "repeated_trigram_share": 0.5,
    "prompt_overlap": 0.2,
    "refusal": 0.3,
    "unfinished": 0.2,
    "truncated": 0.5,
    "mean_logprob": -0.5,
    "min_logprob": -0.2,
}
# Typical log-probabilities of a fluent greedy answer: features are centred on them so an
# answer of ordinary confidence moves the score by nothing.
MEAN_LOGPROB_CENTRE = -0.5
MIN_LOGPROB_CENTRE = -4.0
MEAN_LOGPROB_FLOOR = -3.0
MIN_LOGPROB_FLOOR = -8.0


def design(features: F32) -> F32:
    """Raw features followed by the step features of `BINS` (one row per answer)."""
    cols = [features]
    for name, edges in BINS:
        values = features[:, _INDEX[name]][:, None]
        cols.append((values > np.asarray(edges, dtype=np.float32)[None, :]).astype(np.float32))
    out: F32 = np.concatenate(cols, axis=1).astype(np.float32)
    return out


def _centre_logprobs(features: F32) -> F32:
    out = features.copy()
    has = out[:, _INDEX["has_logprobs"]] > 0
    # Clipped: one very unlikely token (logprob -20) must not outvote everything else.
    mean_lp = np.clip(out[:, _INDEX["mean_logprob"]], MEAN_LOGPROB_FLOOR, 0.0)
    min_lp = np.clip(out[:, _INDEX["min_logprob"]], MIN_LOGPROB_FLOOR, 0.0)
    out[:, _INDEX["mean_logprob"]] = np.where(has, mean_lp - MEAN_LOGPROB_CENTRE, 0.0)
    out[:, _INDEX["min_logprob"]] = np.where(has, min_lp - MIN_LOGPROB_CENTRE, 0.0)
    return out


@dataclass(frozen=True)
class EscalationWeights:
    """Everything the estimator needs at run time (saved as one .npz)."""

    mean: F32  # (len(DESIGN_NAMES),) standardisation
    scale: F32
    coef: F32
    intercept: float
    calib_a: float
    calib_b: float
    quantiles: F64  # reference `escalate` quantiles (share calibration)
    meta: dict[str, object]

    def save(self, path: Path | str) -> None:
        np.savez_compressed(
            path,
            design_names=np.asarray(DESIGN_NAMES, dtype=np.str_),
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            coef=self.coef.astype(np.float32),
            intercept=np.float64(self.intercept),
            calib=np.asarray([self.calib_a, self.calib_b], dtype=np.float64),
            quantiles=self.quantiles.astype(np.float64),
            meta=np.asarray(json.dumps(self.meta)),
        )

    @classmethod
    def load(cls, path: Path | str) -> EscalationWeights:
        with np.load(path, allow_pickle=False) as z:
            names = tuple(str(n) for n in z["design_names"])
            if names != DESIGN_NAMES:
                raise ValueError(f"{path}: made for other answer features: {names}")
            calib = z["calib"]
            return cls(
                mean=z["mean"].astype(np.float32),
                scale=z["scale"].astype(np.float32),
                coef=z["coef"].astype(np.float32),
                intercept=float(z["intercept"]),
                calib_a=float(calib[0]),
                calib_b=float(calib[1]),
                quantiles=z["quantiles"].astype(np.float64),
                meta=json.loads(str(z["meta"])),
            )


class EscalationEstimator:
    """P(the large model's answer is needed) from the prompt and the small model's answer."""

    def __init__(self, weights: EscalationWeights) -> None:
        self.weights = weights
        self.calibration = Calibration(quantiles=weights.quantiles)
        self._w = (weights.coef / weights.scale).astype(np.float64)
        self._b = weights.intercept - float(weights.mean.astype(np.float64) @ self._w)

    @classmethod
    def load(cls, path: Path | str) -> EscalationEstimator:
        return cls(EscalationWeights.load(path))

    def raw_many(self, features: F32) -> F64:
        """The linear score (ranking value) of feature rows."""
        out: F64 = design(_centre_logprobs(features)).astype(np.float64) @ self._w + self._b
        return out

    def _squash(self, raw: F64) -> F64:
        z = self.weights.calib_a * raw + self.weights.calib_b
        out: F64 = 1.0 / (1.0 + np.exp(-z))
        return out

    def escalate(self, prompt: str, answer: str, signals: AnswerSignals | None = None) -> float:
        """Probability in [0, 1] that the large tier should answer instead."""
        row = answer_features(prompt, answer, signals)[None, :]
        return float(self._squash(self.raw_many(row))[0])

    def escalate_many(
        self,
        prompts: Sequence[str],
        answers: Sequence[str],
        signals: list[AnswerSignals] | None = None,
    ) -> F64:
        """Batched `escalate`."""
        features = answer_features_many(list(prompts), list(answers), signals)
        return self._squash(self.raw_many(features))

    def threshold_for_share(self, share: float) -> float:
        """`escalate` threshold sending about `share` of reference answers to the large tier."""
        return self.calibration.threshold_for_share(share)


@lru_cache(maxsize=1)
def load_default_estimator() -> EscalationEstimator:
    """The shipped estimator (loaded once)."""
    return EscalationEstimator.load(DEFAULT_ESCALATION_WEIGHTS)
