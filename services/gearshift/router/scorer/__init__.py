"""Difficulty scorer: P(the strong model is needed) from a query's embedding and text.

The router computes one all-MiniLM-L6-v2 embedding per query and calls
`load_default_scorer().score(embedding, text)`; `threshold_for_share(x)` turns "send at
most x of traffic to the large tier" into a score threshold (RouteLLM-style calibration
on reference traffic stored with the weights). See docs/scorer.md.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from gearshift.router.scorer.calibration import Calibration
from gearshift.router.scorer.model import Scorer, ScorerWeights

DEFAULT_WEIGHTS = Path(__file__).with_name("weights.npz")


@lru_cache(maxsize=1)
def load_default_scorer() -> Scorer:
    """The scorer trained on routing_dev.jsonl, shipped in this package (loaded once)."""
    return Scorer.load(DEFAULT_WEIGHTS)


__all__ = ["DEFAULT_WEIGHTS", "Calibration", "Scorer", "ScorerWeights", "load_default_scorer"]
