"""Everything the scorer reads from a prompt's text, as one vector of numbers.

The scorer's inputs are the query embedding plus cheap text features (both stages'). A
deployment that keeps only prompt digests (`outcomes_keep_prompt_text: false`) cannot
re-derive those features at retraining time, so the router stores this vector instead of
the text: counts and ratios (length, numbers, question words, task verbs...), from which
the prompt cannot be read back. `PROMPT_FEATURES_VERSION` changes with the layout, so a
retraining run never feeds vectors of an older layout to a newer scorer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from gearshift.router.scorer.features import FEATURE_NAMES
from gearshift.router.scorer.open_stage import OPEN_FEATURE_NAMES, open_text_features

F32 = npt.NDArray[np.float32]

# The second stage's own cues first, then the first stage's text features (the layout of
# `open_text_features`, so the second stage reads the whole row).
PROMPT_FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"open.{name}" for name in OPEN_FEATURE_NAMES) + FEATURE_NAMES
)
N_PROMPT_FEATURES = len(PROMPT_FEATURE_NAMES)
FIRST_STAGE = slice(len(OPEN_FEATURE_NAMES), N_PROMPT_FEATURES)
# Bump the revision when a feature's meaning changes without its name changing.
_REVISION = "1"
PROMPT_FEATURES_VERSION = (
    _REVISION
    + ":"
    + hashlib.sha256("\n".join(PROMPT_FEATURE_NAMES).encode("utf-8")).hexdigest()[:12]
)


def prompt_features(text: str) -> F32:
    """The feature row of one prompt (`PROMPT_FEATURE_NAMES` order)."""
    return open_text_features(text)


def prompt_features_many(texts: Sequence[str]) -> F32:
    """One row per prompt."""
    if not texts:
        return np.zeros((0, N_PROMPT_FEATURES), dtype=np.float32)
    return np.stack([open_text_features(t) for t in texts]).astype(np.float32)


def features_to_bytes(row: F32) -> bytes:
    """float32 little-endian, the form the outcome store keeps."""
    return np.asarray(row, dtype="<f4").tobytes()


def features_from_bytes(blob: bytes) -> F32 | None:
    """The stored row, or None when it has the wrong length (another layout, or absent)."""
    row = np.frombuffer(blob, dtype="<f4")
    if row.shape != (N_PROMPT_FEATURES,):
        return None
    return row.astype(np.float32)
