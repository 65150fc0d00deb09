"""Fitting the cascade's escalation estimator: the hand-set prior, a ridge, calibration.

Offline code: the run-time estimator (`gearshift.router.cascade.estimator`) only loads the
weights these functions produce. `python -m gearshift.learn.cascade.train` writes the
shipped file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from gearshift.learn.linear import logistic_1d, ridge
from gearshift.router.cascade.estimator import (
    DESIGN_NAMES,
    F32,
    F64,
    PRIOR,
    EscalationEstimator,
    EscalationWeights,
    _centre_logprobs,
    design,
)
from gearshift.router.cascade.features import AnswerSignals, answer_features_many
from gearshift.router.scorer.calibration import Calibration


def _standardise(x: F32) -> tuple[F32, F32]:
    mean: F32 = x.mean(axis=0).astype(np.float32)
    scale: F32 = np.maximum(x.std(axis=0), 1e-3).astype(np.float32)
    return mean, scale


def prior_weights(features: F32) -> EscalationWeights:
    """The hand-set prior over `PRIOR`, standardised on `features` (uncalibrated)."""
    x = design(_centre_logprobs(features))
    mean, scale = _standardise(x)
    # Log-probability features are absent from answers without them (all zero): keep
    # their scale at one nat, so the prior means the same whatever the reference set.
    for name in ("mean_logprob", "min_logprob"):
        i = DESIGN_NAMES.index(name)
        mean[i], scale[i] = 0.0, 1.0
    coef = np.zeros(len(DESIGN_NAMES), dtype=np.float32)
    for name, value in PRIOR.items():
        coef[DESIGN_NAMES.index(name)] = value
    return EscalationWeights(mean, scale, coef, 0.0, 1.0, 0.0, np.zeros(2), {})


def fit_linear(features: F32, need: F64, alpha: float = 10.0) -> EscalationWeights:
    """Ridge on standardised design features against `need` (uncalibrated)."""
    x = design(_centre_logprobs(features))
    mean, scale = _standardise(x)
    coef, intercept = ridge(((x - mean) / scale).astype(np.float32), need, alpha)
    return EscalationWeights(mean, scale, coef, intercept, 1.0, 0.0, np.zeros(2), {})


def calibrate(
    weights: EscalationWeights, features: F32, need: F64, meta: dict[str, object] | None = None
) -> EscalationWeights:
    """Logistic map and share quantiles from reference answers (ideally unseen ones).

    `need` in [0, 1] is how much the large model was needed for each answer (1 - the
    small answer's judged score); the map is fitted to `need > 0.5`.
    """
    raw = EscalationEstimator(weights).raw_many(features)
    a, b = logistic_1d(raw, need > 0.5)
    calibrated = replace(weights, calib_a=a, calib_b=b)
    values = EscalationEstimator(calibrated)._squash(raw)
    return replace(
        calibrated,
        quantiles=Calibration.from_scores(values).quantiles,
        meta=dict(meta or {}, n_reference=len(need)),
    )


def fit_escalation(
    prompts: Sequence[str],
    answers: Sequence[str],
    good: Sequence[float] | F64,
    signals: list[AnswerSignals] | None = None,
    alpha: float = 10.0,
) -> EscalationWeights:
    """Fits and calibrates the estimator on labelled answers (`good` in [0, 1]).

    For recorded outcomes: `good` is the feedback score of the small model's answer.
    Calibration here is in-sample; re-calibrate on unseen answers where there are some.
    """
    features = answer_features_many(list(prompts), list(answers), signals)
    need = 1.0 - np.asarray(good, dtype=np.float64)
    if need.shape[0] != features.shape[0] or need.shape[0] < 2:
        raise ValueError("need at least two answers, one label each")
    return calibrate(fit_linear(features, need, alpha), features, need)
