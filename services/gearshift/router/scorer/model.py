"""The run-time difficulty scorer: numpy only, well under a millisecond per query.

score = sigmoid(a * g + b), where g is a ridge regression's estimate of the accuracy
gained by sending the prompt to the strong model (strong correct minus weak correct, in
[-1, 1]) and (a, b) map it to the probability that the strong model is needed (strong
right, weak wrong). Ranking by expected gain is what maximises APGR: prompts the strong
model fixes come first, prompts both models fail gain nothing and prompts only the weak
model gets right come last.

The regression's inputs are the query embedding, cheap text features and a domain prior:
a softmax over cosine similarities to per-domain centroids (nearest-centroid, soft) gives
the domain probabilities and, through each domain's mean gain, the domain's expected gain.
Queries far from every domain centroid (unlike all training traffic) are shrunk to an
"easy" gain, so greetings and chit-chat stay on the small tier.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gearshift.router.scorer.calibration import Calibration
from gearshift.router.scorer.features import FEATURE_NAMES, text_features
from gearshift.router.scorer.open_stage import (
    OPEN_FEATURE_NAMES,
    OpenStage,
    open_design,
    open_design_from_features,
)
from gearshift.router.scorer.prompt_features import (
    FIRST_STAGE,
    N_PROMPT_FEATURES,
    prompt_features_many,
)

F32 = npt.NDArray[np.float32]
EMBEDDING_DIM = 384


def softmax_rows(z: F32) -> F32:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: F32 = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


@dataclass(frozen=True)
class ScorerWeights:
    """Everything the scorer needs at run time (saved as one .npz)."""

    centroids: F32  # (D, 384), unit rows
    domain_gain: F32  # (D,) smoothed mean gain per domain
    domain_names: list[str]
    temperature: float
    coef: F32  # (384 + n_text + 1 + D,)
    intercept: float
    calib_a: float
    calib_b: float
    quantiles: npt.NDArray[np.float64]  # reference score quantiles
    meta: dict[str, object]
    # Familiarity: cosine to the nearest domain centroid below `familiar_lo` means "unlike
    # any training traffic"; the gain estimate is then shrunk to `unfamiliar_gain`.
    familiar_lo: float = 0.0
    familiar_hi: float = 0.0
    unfamiliar_gain: float = 0.0
    # Second stage for unfamiliar prompts (None: the constant `unfamiliar_gain`).
    open_stage: OpenStage | None = None

    def save(self, path: Path | str) -> None:
        extra: dict[str, Any] = {}
        if self.open_stage is not None:
            stage = self.open_stage
            extra = {
                "open_coef": stage.coef.astype(np.float32),
                "open_params": np.asarray([stage.intercept, stage.lo, stage.hi]),
                "open_feature_names": np.asarray(OPEN_FEATURE_NAMES, dtype=np.str_),
            }
        np.savez_compressed(
            path,
            **extra,
            centroids=self.centroids.astype(np.float32),
            domain_gain=self.domain_gain.astype(np.float32),
            domain_names=np.asarray(self.domain_names, dtype=np.str_),
            temperature=np.float64(self.temperature),
            coef=self.coef.astype(np.float32),
            intercept=np.float64(self.intercept),
            calib=np.asarray([self.calib_a, self.calib_b], dtype=np.float64),
            quantiles=self.quantiles.astype(np.float64),
            feature_names=np.asarray(FEATURE_NAMES, dtype=np.str_),
            meta=np.asarray(json.dumps(self.meta)),
            familiarity=np.asarray(
                [self.familiar_lo, self.familiar_hi, self.unfamiliar_gain], dtype=np.float64
            ),
        )

    @classmethod
    def load(cls, path: Path | str) -> ScorerWeights:
        with np.load(path, allow_pickle=False) as z:
            names = [str(n) for n in z["feature_names"]]
            if tuple(names) != FEATURE_NAMES:
                raise ValueError(f"{path}: trained with other text features: {names}")
            calib = z["calib"]
            fam = z["familiarity"]
            stage = None
            if "open_coef" in z.files:
                open_names = tuple(str(n) for n in z["open_feature_names"])
                if open_names != OPEN_FEATURE_NAMES:
                    raise ValueError(f"{path}: second stage has other features: {open_names}")
                params = z["open_params"]
                stage = OpenStage(
                    coef=z["open_coef"].astype(np.float32),
                    intercept=float(params[0]),
                    lo=float(params[1]),
                    hi=float(params[2]),
                )
            return cls(
                centroids=z["centroids"].astype(np.float32),
                domain_gain=z["domain_gain"].astype(np.float32),
                domain_names=[str(n) for n in z["domain_names"]],
                temperature=float(z["temperature"]),
                coef=z["coef"].astype(np.float32),
                intercept=float(z["intercept"]),
                calib_a=float(calib[0]),
                calib_b=float(calib[1]),
                quantiles=z["quantiles"].astype(np.float64),
                meta=json.loads(str(z["meta"])),
                familiar_lo=float(fam[0]),
                familiar_hi=float(fam[1]),
                unfamiliar_gain=float(fam[2]),
                open_stage=stage,
            )


def domain_features(embeddings: F32, centroids: F32, gain: F32, temperature: float) -> F32:
    """[expected domain gain, domain probabilities] for each embedding row."""
    probs = softmax_rows((embeddings @ centroids.T) / np.float32(temperature))
    prior = probs @ gain
    out: F32 = np.concatenate([prior[:, None], probs], axis=1).astype(np.float32)
    return out


def design_matrix(embeddings: F32, texts_features: F32, domain: F32) -> F32:
    out: F32 = np.concatenate([embeddings, texts_features, domain], axis=1).astype(np.float32)
    return out


class Scorer:
    """Difficulty of a query from its embedding and text: P(the strong model is needed)."""

    def __init__(self, weights: ScorerWeights) -> None:
        self.weights = weights
        self.calibration = Calibration(quantiles=weights.quantiles)
        self._centroids_t = np.ascontiguousarray(weights.centroids.T)
        self._inv_temp = np.float32(1.0 / weights.temperature)
        d = EMBEDDING_DIM
        n_text = len(FEATURE_NAMES)
        self._w_emb = weights.coef[:d]
        self._w_text = weights.coef[d : d + n_text]
        self._w_prior = float(weights.coef[d + n_text])
        self._w_probs = weights.coef[d + n_text + 1 :]
        # Domain probabilities enter linearly twice (via the prior and directly): fold them.
        self._w_domain = (self._w_prior * weights.domain_gain + self._w_probs).astype(np.float32)

    @classmethod
    def load(cls, path: Path | str) -> Scorer:
        return cls(ScorerWeights.load(path))

    def _check(self, embedding: npt.NDArray[np.float32]) -> None:
        if embedding.shape[-1] != EMBEDDING_DIM:
            raise ValueError(
                f"expected a {EMBEDDING_DIM}-d all-MiniLM-L6-v2 embedding, "
                f"got {embedding.shape[-1]}"
            )

    def _squash(self, gain: npt.NDArray[np.floating] | float) -> npt.NDArray[np.float64]:
        z = self.weights.calib_a * np.asarray(gain, dtype=np.float64) + self.weights.calib_b
        out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
        return out

    def expected_gain(
        self, embedding: Sequence[float] | npt.NDArray[np.floating], text: str
    ) -> float:
        """The ridge output: expected accuracy gain of sending this query up."""
        vec = np.asarray(embedding, dtype=np.float32).reshape(-1)
        self._check(vec)
        cosines = vec @ self._centroids_t
        logits = cosines * self._inv_temp
        logits -= logits.max()
        probs = np.exp(logits)
        probs /= probs.sum()
        value = (
            float(vec @ self._w_emb)
            + float(text_features(text) @ self._w_text)
            + float(probs @ self._w_domain)
            + self.weights.intercept
        )
        # The second stage's text cues are computed only when the query needs that stage.
        open_rows = partial(open_design, vec.reshape(1, -1), [text])
        return float(self._shrink(np.asarray([value]), cosines.reshape(1, -1), open_rows)[0])

    def _shrink(
        self,
        gain: npt.NDArray[np.floating],
        cosines: npt.NDArray[np.floating],
        open_rows: Callable[[], F32],
    ) -> npt.NDArray[np.float64]:
        """Hands queries unlike all training traffic to the second stage.

        The regression extrapolates arbitrarily far from its data, so away from it the
        open-prompt stage (or, in weights without one, a constant "easy" gain) decides;
        in the familiarity band the two are blended.
        """
        w = self.weights
        span = max(w.familiar_hi - w.familiar_lo, 1e-6)
        fam = np.clip((cosines.max(axis=1) - w.familiar_lo) / span, 0.0, 1.0)
        fallback: npt.NDArray[np.float64] | float = w.unfamiliar_gain
        if w.open_stage is not None and bool((fam < 1.0).any()):
            fallback = w.open_stage.gain_from_design(open_rows())
        out: npt.NDArray[np.float64] = fallback + fam * (gain.astype(np.float64) - fallback)
        return out

    def score(self, embedding: Sequence[float] | npt.NDArray[np.floating], text: str) -> float:
        """Probability in [0, 1] that the strong model is needed (higher = harder)."""
        return float(self._squash(self.expected_gain(embedding, text)))

    def expected_gain_many(
        self, embeddings: Sequence[Sequence[float]] | npt.NDArray[np.floating], texts: Sequence[str]
    ) -> npt.NDArray[np.float64]:
        """Batched `expected_gain`: one row of `embeddings` per text."""
        mat = np.asarray(embeddings, dtype=np.float32)
        if mat.ndim != 2 or mat.shape[0] != len(texts):
            raise ValueError("embeddings must be (len(texts), 384)")
        return self.expected_gain_features(mat, prompt_features_many(texts))

    def expected_gain_features(
        self, embeddings: npt.NDArray[np.floating], features: F32
    ) -> npt.NDArray[np.float64]:
        """`expected_gain_many` from precomputed `prompt_features` rows instead of texts
        (what a digest-only outcome store keeps)."""
        mat = np.asarray(embeddings, dtype=np.float32)
        if mat.ndim != 2 or features.shape != (mat.shape[0], N_PROMPT_FEATURES):
            raise ValueError(
                f"expected (n, {EMBEDDING_DIM}) embeddings and (n, {N_PROMPT_FEATURES}) "
                f"prompt features, got {mat.shape} and {features.shape}"
            )
        self._check(mat)
        cosines = mat @ self._centroids_t
        probs = softmax_rows(cosines * self._inv_temp)
        gain = (
            mat @ self._w_emb
            + features[:, FIRST_STAGE] @ self._w_text
            + probs @ self._w_domain
            + np.float32(self.weights.intercept)
        )
        return self._shrink(gain, cosines, partial(open_design_from_features, mat, features))

    def score_features(
        self, embeddings: npt.NDArray[np.floating], features: F32
    ) -> npt.NDArray[np.float64]:
        """Batched `score` from precomputed prompt features."""
        return self._squash(self.expected_gain_features(embeddings, features))

    def score_many(
        self, embeddings: Sequence[Sequence[float]] | npt.NDArray[np.floating], texts: Sequence[str]
    ) -> npt.NDArray[np.float64]:
        """Batched `score`: one row of `embeddings` per text."""
        return self._squash(self.expected_gain_many(embeddings, texts))

    def threshold_for_share(self, share: float) -> float:
        """Score threshold that sends about `share` of reference traffic to the large tier."""
        return self.calibration.threshold_for_share(share)

    def domain_probabilities(
        self, embedding: Sequence[float] | npt.NDArray[np.floating]
    ) -> dict[str, float]:
        """The soft nearest-centroid domain assignment (for `route explain`)."""
        vec = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        self._check(vec)
        probs = softmax_rows((vec @ self._centroids_t) * self._inv_temp)[0]
        return {n: float(p) for n, p in zip(self.weights.domain_names, probs, strict=True)}
