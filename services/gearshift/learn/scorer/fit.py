"""Fitting the scorer (numpy only): domain centroids, ridge regression, calibration.

Training rows get their domain features out-of-fold (inner k-fold), so the ridge learns
how much to trust a domain prior that was *not* fitted on the row itself, as at run time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt

from gearshift.learn.linear import logistic_1d, ridge
from gearshift.learn.routing_data import RoutingData, stratified_folds
from gearshift.router.scorer.calibration import Calibration
from gearshift.router.scorer.model import (
    F32,
    Scorer,
    ScorerWeights,
    design_matrix,
    domain_features,
)
from gearshift.router.scorer.open_stage import F64, OpenStage, open_design
from gearshift.router.scorer.prompt_features import FIRST_STAGE, prompt_features_many

ALPHA = 30.0
TEMPERATURE = 0.03
SMOOTHING = 5.0
INNER_FOLDS = 5
# Below the 0.5% quantile of training cosines to the nearest domain centroid a query counts
# as unfamiliar; above the 5% quantile as familiar; in between the estimate is blended.
FAMILIAR_LO_Q = 0.005
FAMILIAR_HI_Q = 0.05
UNFAMILIAR_GAIN_Q = 0.10
# Caps, so a narrow training set (one template per domain) does not make every new
# wording "unfamiliar": all-MiniLM cosines above ~0.4 mean clearly related text.
FAMILIAR_LO_CAP = 0.25
FAMILIAR_HI_CAP = 0.4
# The open stage (see router/scorer/open_stage.py): ridge penalty for few, templated anchors,
# keeping the embedding direction smooth; a clearly hard open task counts like the top 5%
# of benchmark prompts.
OPEN_STAGE_ALPHA = 3.0
HI_QUANTILE = 0.95


def domain_centroids(
    embeddings: F32, domains: list[str], gain: npt.NDArray[np.float64], names: list[str]
) -> tuple[F32, F32]:
    """Unit centroid and smoothed mean gain (shrunk towards 0) of every domain."""
    labels = np.asarray(domains)
    cents = np.zeros((len(names), embeddings.shape[1]), dtype=np.float32)
    gains = np.zeros(len(names), dtype=np.float32)
    for k, name in enumerate(names):
        mask = labels == name
        if mask.any():
            c = embeddings[mask].mean(axis=0)
            cents[k] = c / max(float(np.linalg.norm(c)), 1e-12)
            gains[k] = gain[mask].sum() / (mask.sum() + SMOOTHING)
    return cents, gains


def _oof_domain_features(embeddings: F32, data: RoutingData, names: list[str], seed: int) -> F32:
    gain = data.gain
    out = np.zeros((len(data), 1 + len(names)), dtype=np.float32)
    for train, test in stratified_folds(data.domains, INNER_FOLDS, seed=seed + 1):
        cents, gains = domain_centroids(
            embeddings[train], [data.domains[i] for i in train], gain[train], names
        )
        out[test] = domain_features(embeddings[test], cents, gains, TEMPERATURE)
    return out


def fit_gain_model(
    data: RoutingData,
    embeddings: F32,
    alpha: float = ALPHA,
    seed: int = 0,
    calibration_gains: npt.NDArray[np.float64] | None = None,
    meta: dict[str, object] | None = None,
    features: F32 | None = None,
) -> ScorerWeights:
    """Fits the scorer on all of `data`.

    `calibration_gains` are out-of-fold gain estimates for the same rows (from
    `cross_validated_gains`); the probability mapping and the reference quantiles come
    from them, so calibration reflects unseen traffic. Without them the in-sample
    estimates are used (tests, tiny data). `features` are the rows' `prompt_features`
    when the texts are not at hand (outcomes stored as digests); by default they are
    computed from `data.prompts`.
    """
    names = sorted(set(data.domains))
    gain = data.gain
    if features is None:
        features = prompt_features_many(data.prompts)
    text = features[:, FIRST_STAGE]
    dom_oof = _oof_domain_features(embeddings, data, names, seed)
    coef, intercept = ridge(design_matrix(embeddings, text, dom_oof), gain, alpha)
    cents, gains = domain_centroids(embeddings, data.domains, gain, names)
    draft = ScorerWeights(
        centroids=cents,
        domain_gain=gains,
        domain_names=names,
        temperature=TEMPERATURE,
        coef=coef,
        intercept=intercept,
        calib_a=1.0,
        calib_b=0.0,
        quantiles=np.zeros(2),
        meta={},
    )
    # Familiarity band from the training traffic's own nearest-centroid cosines.
    nearest = (embeddings @ cents.T).max(axis=1)
    raw_gains = Scorer(draft).expected_gain_features(embeddings, features)
    familiar = dataclasses.replace(
        draft,
        familiar_lo=min(float(np.quantile(nearest, FAMILIAR_LO_Q)), FAMILIAR_LO_CAP),
        familiar_hi=min(float(np.quantile(nearest, FAMILIAR_HI_Q)), FAMILIAR_HI_CAP),
        unfamiliar_gain=float(np.quantile(raw_gains, UNFAMILIAR_GAIN_Q)),
    )
    if calibration_gains is None:
        calibration_gains = Scorer(familiar).expected_gain_features(embeddings, features)
    needed = data.strong_correct & ~data.weak_correct
    a, b = logistic_1d(calibration_gains, needed)
    scores = 1.0 / (1.0 + np.exp(-(a * calibration_gains + b)))
    return dataclasses.replace(
        familiar,
        calib_a=a,
        calib_b=b,
        quantiles=Calibration.from_scores(scores).quantiles,
        meta=dict(meta or {}, n_train=len(data), alpha=alpha),
    )


def gains_of(
    weights: ScorerWeights, embeddings: F32, prompts: list[str]
) -> npt.NDArray[np.float64]:
    """Batched expected gains (the pre-sigmoid ranking value)."""
    return Scorer(weights).expected_gain_many(embeddings, prompts)


def cross_validated_gains(
    data: RoutingData, embeddings: F32, k: int = 5, seed: int = 0, alpha: float = ALPHA
) -> npt.NDArray[np.float64]:
    """Out-of-fold expected gains: each row scored by a model that never saw it."""
    out = np.zeros(len(data), dtype=np.float64)
    for train, test in stratified_folds(data.domains, k, seed=seed):
        weights = fit_gain_model(data.subset(train), embeddings[train], alpha=alpha, seed=seed)
        out[test] = gains_of(weights, embeddings[test], [data.prompts[i] for i in test])
    return out


def attach_open_stage(
    weights: ScorerWeights, anchors: RoutingData, embeddings: F32
) -> ScorerWeights:
    """`weights` with the second stage fitted on the anchor prompts (see open_stage.py)."""
    lo = weights.unfamiliar_gain
    hi = gain_at_score_quantile(weights.quantiles, weights.calib_a, weights.calib_b, HI_QUANTILE)
    hard = anchors.strong_correct & ~anchors.weak_correct
    stage = fit_open_stage(embeddings, anchors.prompts, hard, lo, hi)
    return dataclasses.replace(weights, open_stage=stage)


def fit_open_stage(
    embeddings: F32, texts: list[str], hard: npt.NDArray[np.bool_], lo: float, hi: float
) -> OpenStage:
    """Ridge of `hard` (0/1) on the open design, standardised cues, embedding as is."""
    x = open_design(embeddings, texts)
    d = embeddings.shape[1]
    mean = np.zeros(x.shape[1], dtype=np.float32)
    scale = np.ones(x.shape[1], dtype=np.float32)
    mean[d:] = x[:, d:].mean(axis=0)
    scale[d:] = np.maximum(x[:, d:].std(axis=0), 1e-3)
    coef, intercept = ridge((x - mean) / scale, hard.astype(np.float64), alpha=OPEN_STAGE_ALPHA)
    coef = (coef / scale).astype(np.float32)
    intercept -= float(mean.astype(np.float64) @ coef)
    return OpenStage(coef=coef, intercept=intercept, lo=lo, hi=hi)


def gain_at_score_quantile(
    weights_quantiles: F64, calib_a: float, calib_b: float, q: float
) -> float:
    """First-stage gain whose score is the reference traffic's `q` quantile."""
    grid = np.linspace(0.0, 1.0, weights_quantiles.size)
    score = float(np.clip(np.interp(q, grid, weights_quantiles), 1e-9, 1 - 1e-9))
    return (math.log(score / (1.0 - score)) - calib_b) / calib_a
