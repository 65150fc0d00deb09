"""RouteLLM's routing metrics: PGR curve, APGR and CPT.

A router ranks prompts by score and sends the top share x to the strong model, the rest
to the weak one; quality is accuracy. PGR(x) = (quality(x) - weak) / (strong - weak) is
the share of the weak-to-strong accuracy gap recovered, APGR the area under PGR over x in
[0, 1], and CPT(p) the smallest share of strong calls whose PGR reaches p.

The curve is computed exactly at every k/n (k prompts routed up). Prompts with tied scores
cannot be ordered by the router, so a tied block contributes its mean gain per prompt
(the expectation over random tie-breaking); a constant score therefore gives the random
router's APGR of 0.5 exactly instead of a number that depends on the input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
# Per-prompt quality of each model: right/wrong, or a judged score in [0, 1].
Outcomes = Sequence[bool] | Sequence[float] | npt.NDArray[np.bool_] | npt.NDArray[np.floating]


@dataclass(frozen=True)
class RoutingReport:
    """Summary of one router on one labelled set."""

    apgr: float
    cpt50: float
    cpt80: float
    weak_accuracy: float
    strong_accuracy: float
    n: int


def pgr_curve(
    scores: Sequence[float] | npt.NDArray[np.floating],
    weak_correct: Outcomes,
    strong_correct: Outcomes,
) -> tuple[FloatArray, FloatArray]:
    """(x, PGR(x)) at x = k/n for k = 0..n, routing the k highest scores to strong."""
    s = np.asarray(scores, dtype=np.float64)
    weak = np.asarray(weak_correct, dtype=np.float64)
    strong = np.asarray(strong_correct, dtype=np.float64)
    n = s.shape[0]
    if n == 0 or weak.shape[0] != n or strong.shape[0] != n:
        raise ValueError("scores and outcomes must be non-empty and of equal length")
    gap = strong.mean() - weak.mean()
    if gap <= 0:
        raise ValueError("the strong model must be more accurate than the weak one")
    order = np.argsort(-s, kind="stable")
    gain = (strong - weak)[order]
    sorted_scores = s[order]
    # Replace each prompt's gain by its tie block's mean gain (expected under random ties).
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], n]
    block_mean = np.add.reduceat(gain, starts) / (ends - starts)
    smoothed = np.repeat(block_mean, ends - starts)
    recovered = np.r_[0.0, np.cumsum(smoothed)] / n
    x = np.arange(n + 1, dtype=np.float64) / n
    return x, recovered / gap


def apgr(x: FloatArray, pgr: FloatArray) -> float:
    """Area under the PGR curve (trapezoid rule over the exact k/n grid)."""
    return float(np.sum((pgr[1:] + pgr[:-1]) * np.diff(x)) / 2.0)


def cpt(x: FloatArray, pgr: FloatArray, target: float) -> float:
    """Smallest share of strong calls whose PGR reaches `target` (1.0 if never)."""
    reached = np.flatnonzero(pgr >= target - 1e-12)
    return float(x[reached[0]]) if reached.size else 1.0


def routing_report(
    scores: Sequence[float] | npt.NDArray[np.floating],
    weak_correct: Outcomes,
    strong_correct: Outcomes,
) -> RoutingReport:
    """APGR, CPT(50%) and CPT(80%) of one score vector."""
    x, pgr = pgr_curve(scores, weak_correct, strong_correct)
    return RoutingReport(
        apgr=apgr(x, pgr),
        cpt50=cpt(x, pgr, 0.5),
        cpt80=cpt(x, pgr, 0.8),
        weak_accuracy=float(np.mean(np.asarray(weak_correct, dtype=np.float64))),
        strong_accuracy=float(np.mean(np.asarray(strong_correct, dtype=np.float64))),
        n=len(scores),
    )
