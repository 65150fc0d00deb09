"""The precision step: is a cached question truly the same question as the new one?

A vector search always returns a nearest neighbour; whether serving its answer is
right is a separate decision. The verifier is a gradient-boosted tree ensemble
(trained by `gearshift.learn.cache.train_verifier` on Quora question pairs) over pair
features; it returns a probability. Trees beat a network over the raw embeddings
here: with 33k training pairs the 768 embedding interactions over-fit, while
trees on a few dozen pair features generalise (held-out precision at 40% recall
0.87 against 0.83).

Its weights ship with a calibration table measured on pairs the model was not
fitted on: for each threshold, the share of served hits that were wrong and the
share of duplicates served. The deployment states the largest false-hit rate it
accepts and the verifier picks the lowest threshold that holds to it, so recall is
as high as that bound allows.

Inference is numpy only: no scikit-learn at run time. The trees are walked for
all pairs and all trees at once, one level per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gearshift.cache.features import FEATURE_NAMES, IdfTable, batch_features

WEIGHTS_FILE = Path(__file__).with_name("verifier_weights.npz")

FloatArray = npt.NDArray[np.float32]

_NUMBER_MISMATCH = FEATURE_NAMES.index("number_mismatch")
_NEGATION_MISMATCH = FEATURE_NAMES.index("negation_mismatch")
_OPPOSITE = FEATURE_NAMES.index("opposite_words")


@dataclass(frozen=True)
class CalibrationPoint:
    threshold: float
    false_hit_rate: float
    recall: float


@dataclass(frozen=True)
class TreeEnsemble:
    """Binary trees stored as flat node arrays; `roots` holds each tree's first node.

    A node sends a pair left when `x[feature] <= threshold`; `left`/`right` are
    indexes into the same flat arrays. Leaves point to themselves, so walking `depth`
    steps lands every pair on its leaf without checking where it is. The log-odds
    are `baseline` plus the sum of the leaf values reached in every tree.
    """

    roots: npt.NDArray[np.int64]
    feature: npt.NDArray[np.int64]
    threshold: npt.NDArray[np.float64]  # float64: float32 rounding flips splits
    left: npt.NDArray[np.int64]
    right: npt.NDArray[np.int64]
    value: FloatArray
    depth: int
    baseline: float

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]]) -> TreeEnsemble:
        """From the arrays `train_verifier.export_trees` writes (an open .npz or a dict)."""
        is_leaf = arrays["node_is_leaf"].astype(bool)
        itself = np.arange(is_leaf.shape[0], dtype=np.int64)
        return cls(
            roots=arrays["tree_roots"].astype(np.int64),
            feature=np.where(is_leaf, 0, arrays["node_feature"]).astype(np.int64),
            threshold=arrays["node_threshold"].astype(np.float64),
            left=np.where(is_leaf, itself, arrays["node_left"]).astype(np.int64),
            right=np.where(is_leaf, itself, arrays["node_right"]).astype(np.int64),
            value=arrays["node_value"].astype(np.float32),
            depth=int(arrays["tree_depth"]),
            baseline=float(arrays["baseline"]),
        )

    def log_odds(self, x: FloatArray) -> FloatArray:
        x64 = x.astype(np.float64)
        node = np.broadcast_to(self.roots, (x.shape[0], self.roots.shape[0])).copy()
        rows = np.arange(x.shape[0])[:, None]
        for _ in range(self.depth):
            goes_left = x64[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(goes_left, self.left[node], self.right[node])
        out: FloatArray = (self.baseline + self.value[node].sum(axis=1)).astype(np.float32)
        return out


class Verifier:
    """Scores (question, cached question) pairs; see the module docstring."""

    def __init__(self, path: Path = WEIGHTS_FILE) -> None:
        with np.load(path, allow_pickle=False) as data:
            names = tuple(str(n) for n in data["feature_names"])
            if names != FEATURE_NAMES:
                raise ValueError(
                    f"{path} was trained on other features; retrain it with "
                    "`python -m gearshift.learn.cache.train_verifier`"
                )
            self.trees = TreeEnsemble.from_arrays(data)
            self.idf = IdfTable.from_arrays(data)
            self.calibration = [
                CalibrationPoint(float(t), float(f), float(r))
                for t, f, r in zip(
                    data["cal_threshold"],
                    data["cal_false_hit_rate"],
                    data["cal_recall"],
                    strict=True,
                )
            ]

    def threshold_for(self, max_false_hit_rate: float) -> CalibrationPoint:
        """The most permissive calibrated threshold whose false-hit rate stays within bound."""
        ok = [p for p in self.calibration if p.false_hit_rate <= max_false_hit_rate]
        if not ok:
            # No calibrated threshold holds the bound: serve exact hits only.
            return CalibrationPoint(1.01, 0.0, 0.0)
        return max(ok, key=lambda p: p.recall)

    def predict(
        self,
        questions: list[str],
        candidates: list[str],
        qv: FloatArray,
        cv: FloatArray,
    ) -> FloatArray:
        """Probability that each (question, candidate) pair asks the same thing."""
        if not questions:
            return np.zeros(0, dtype=np.float32)
        qv = np.atleast_2d(qv).astype(np.float32)
        cv = np.atleast_2d(cv).astype(np.float32)
        cosine = np.sum(qv * cv, axis=1)
        x = batch_features(questions, candidates, cosine.tolist(), self.idf)
        # Hard vetoes: a different number, a negation on one side only, or opposite
        # words ("enable" / "disable") change the question whatever the model says.
        veto = (x[:, _NUMBER_MISMATCH] > 0) | (x[:, _NEGATION_MISMATCH] > 0) | (x[:, _OPPOSITE] > 0)
        logits = self.trees.log_odds(np.nan_to_num(x))
        probs: FloatArray = (1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))).astype(np.float32)
        probs[veto] = 0.0
        return probs
