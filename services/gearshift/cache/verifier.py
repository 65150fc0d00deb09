"""The precision step: is a cached question truly the same question as the new one?

A vector search always returns a nearest neighbour; whether serving its answer is
right is a separate decision. The verifier is a small model (trained by
`gearshift.cache.train_verifier` on Quora question pairs) over pair features and
the two embeddings; it returns a probability. Its weights ship with a calibration
table measured on pairs the model was not fitted on: for each threshold, the
share of served hits that were wrong and the share of duplicates served. The
deployment states the largest false-hit rate it accepts and the verifier picks the
lowest threshold that holds to it, so recall is as high as that bound allows.

Inference is numpy only: no scikit-learn at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.cache.features import FEATURE_NAMES, N_FEATURES, batch_features

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


def embedding_features(u: FloatArray, v: FloatArray) -> FloatArray:
    """Symmetric interactions of two (n, d) unit-vector batches: u*v and |u-v|."""
    out: FloatArray = np.concatenate([u * v, np.abs(u - v)], axis=1).astype(np.float32)
    return out


class Verifier:
    """A one-hidden-layer network (or logistic regression) over pair features."""

    def __init__(self, path: Path = WEIGHTS_FILE) -> None:
        with np.load(path, allow_pickle=False) as data:
            self.mean = data["mean"].astype(np.float32)
            self.scale = data["scale"].astype(np.float32)
            self.w1 = data["w1"].astype(np.float32)
            self.b1 = data["b1"].astype(np.float32)
            self.w2 = data["w2"].astype(np.float32)
            self.b2 = data["b2"].astype(np.float32)
            self.use_embeddings = bool(data["use_embeddings"])
            self.calibration = [
                CalibrationPoint(float(t), float(f), float(r))
                for t, f, r in zip(
                    data["cal_threshold"],
                    data["cal_false_hit_rate"],
                    data["cal_recall"],
                    strict=True,
                )
            ]
        expected = N_FEATURES + (768 if self.use_embeddings else 0)
        if self.mean.shape[0] != expected:
            raise ValueError(
                f"verifier weights expect {self.mean.shape[0]} features, not {expected}"
            )

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
        x = batch_features(questions, candidates, cosine.tolist())
        if self.use_embeddings:
            x = np.concatenate([x, embedding_features(qv, cv)], axis=1)
        # Hard vetoes: a different number, a negation on one side only, or opposite
        # words ("enable" / "disable") change the question whatever the model says.
        veto = (x[:, _NUMBER_MISMATCH] > 0) | (x[:, _NEGATION_MISMATCH] > 0) | (x[:, _OPPOSITE] > 0)
        x = (x - self.mean) / self.scale
        h = x @ self.w1 + self.b1
        if self.w2.size:
            h = np.maximum(h, 0.0) @ self.w2 + self.b2
        logits = h.reshape(-1)
        probs: FloatArray = (1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))).astype(np.float32)
        probs[veto] = 0.0
        return probs
