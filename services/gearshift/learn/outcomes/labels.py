"""Turns recorded outcomes into routing labels: would each tier have answered well?

The scorer learns the gain of sending a prompt up (strong correct minus weak correct),
but an outcome describes only the tier that answered; `other_tier_better` says something
about the other one. The rules (good = score >= 0.5):

| answered by | other_tier_better | weak_correct | strong_correct |
|---|---|---|---|
| slm | true | false | true |
| slm | false | good | good (the large tier would do no better) |
| slm | not given | good | true (assumed: the large tier gets it right) |
| llm | true | true | good (the small tier would have done) |
| llm | false | false | good |
| llm | not given | unknown: not used for training |

A user's feedback wins over the shadow judge's grade for the same answer.

The scorer reads the prompt's text through its prompt features. A decision stored with
its text gets them from the text; one stored as a digest only, from the features stored
with it. A digest-only decision without usable features (recorded by a router before
they were stored, or with another feature layout) cannot be learned from: it is left out
and counted, never trained on as an empty prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gearshift.router.outcomes.records import SOURCE_USER, LabelledDecision
from gearshift.router.scorer.prompt_features import (
    N_PROMPT_FEATURES,
    PROMPT_FEATURES_VERSION,
    features_from_bytes,
    prompt_features,
)

GOOD = 0.5


@dataclass(frozen=True)
class OutcomeLabels:
    """Labelled decisions ready for training: prompt features, embedding and the two
    outcomes (`prompts` holds "" where only the digest was stored)."""

    response_ids: list[str]
    prompts: list[str]
    embeddings: npt.NDArray[np.float32]
    features: npt.NDArray[np.float32]  # (n, N_PROMPT_FEATURES) prompt features
    weak_correct: npt.NDArray[np.bool_]
    strong_correct: npt.NDArray[np.bool_]
    # Answers with an outcome left out because neither text nor usable features were kept.
    without_features: int = 0

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, mask: npt.NDArray[np.bool_]) -> OutcomeLabels:
        index = np.flatnonzero(mask)
        return OutcomeLabels(
            response_ids=[self.response_ids[i] for i in index],
            prompts=[self.prompts[i] for i in index],
            embeddings=self.embeddings[index],
            features=self.features[index],
            weak_correct=self.weak_correct[index],
            strong_correct=self.strong_correct[index],
        )


def decision_features(prompt: str, stored: bytes, version: str) -> npt.NDArray[np.float32] | None:
    """The prompt features of a stored decision, or None when it has none usable."""
    if prompt:
        return prompt_features(prompt)
    if version != PROMPT_FEATURES_VERSION:
        return None
    return features_from_bytes(stored)


def label(tier: str, score: float, other_tier_better: bool | None) -> tuple[bool, bool] | None:
    """(weak_correct, strong_correct) from one outcome, or None when it says too little."""
    good = score >= GOOD
    if tier == "slm":
        if other_tier_better is True:
            return False, True
        if other_tier_better is False:
            return good, good
        return good, True
    if other_tier_better is None:
        return None
    return other_tier_better, good


def outcome_labels(rows: Sequence[LabelledDecision]) -> OutcomeLabels:
    """One labelled example per answer (user feedback over judge grades); rows without an
    embedding or with nothing to learn are left out."""
    best: dict[tuple[str, str], LabelledDecision] = {}
    for row in rows:
        key = (row.decision.tenant, row.decision.response_id)
        if key not in best or row.outcome.source == SOURCE_USER:
            best[key] = row
    ids: list[str] = []
    prompts: list[str] = []
    vectors: list[npt.NDArray[np.float32]] = []
    rows_features: list[npt.NDArray[np.float32]] = []
    weak: list[bool] = []
    strong: list[bool] = []
    without_features = 0
    for row in best.values():
        d = row.decision
        vector = d.embedding_vector()
        labels = label(d.tier, row.outcome.score, row.outcome.other_tier_better)
        if vector.shape != (384,) or labels is None:
            continue
        features = decision_features(d.prompt, d.features, d.features_version)
        if features is None:
            without_features += 1
            continue
        ids.append(d.response_id)
        prompts.append(d.prompt)
        vectors.append(vector.astype(np.float32))
        rows_features.append(features)
        weak.append(labels[0])
        strong.append(labels[1])
    embeddings = np.stack(vectors) if vectors else np.zeros((0, 384), dtype=np.float32)
    features_matrix = (
        np.stack(rows_features)
        if rows_features
        else np.zeros((0, N_PROMPT_FEATURES), dtype=np.float32)
    )
    return OutcomeLabels(
        ids,
        prompts,
        embeddings,
        features_matrix.astype(np.float32),
        np.asarray(weak, bool),
        np.asarray(strong, bool),
        without_features=without_features,
    )


def held_out_mask(response_ids: Sequence[str], fraction: float) -> npt.NDArray[np.bool_]:
    """A stable split by response id (the same answer is always on the same side)."""
    cut = int(fraction * 10_000)
    return np.asarray(
        [int(hashlib.sha256(r.encode()).hexdigest()[:8], 16) % 10_000 < cut for r in response_ids],
        dtype=bool,
    )
