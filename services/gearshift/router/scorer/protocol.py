"""The router's view of the difficulty scorer (`gearshift.router.scorer`).

The scorer package maps a query (its embedding and text) to a difficulty in [0, 1] and
carries a calibration that turns "send at most x of traffic to the large tier" into a
threshold (RouteLLM-style: the (1 - x) quantile of scores on reference traffic). This
module adapts whatever that package exports to one small protocol, so the pipeline does
not depend on its internals.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


class DifficultyScorer(Protocol):
    """Difficulty in [0, 1] (higher = harder) and the calibrated threshold for a share."""

    def score(self, embedding: Sequence[float], text: str) -> float: ...

    def threshold_for_share(self, share: float) -> float: ...


class PackageScorer:
    """Adapts the scorer package's object: `score(embedding, text)` plus a calibration."""

    def __init__(self, scorer: Any) -> None:
        self._scorer = scorer
        calibration = getattr(scorer, "calibration", None)
        if hasattr(scorer, "threshold_for_share"):
            self._calibration = scorer
        elif calibration is not None and hasattr(calibration, "threshold_for_share"):
            self._calibration = calibration
        else:
            raise TypeError("the scorer has no threshold_for_share calibration")

    def score(self, embedding: Sequence[float], text: str) -> float:
        vector = np.asarray(embedding, dtype=np.float32)
        value = float(self._scorer.score(vector, text))
        return min(1.0, max(0.0, value)) if math.isfinite(value) else 1.0

    def threshold_for_share(self, share: float) -> float:
        return float(self._calibration.threshold_for_share(share))


class LengthScorer:
    """Stand-in used only when the trained scorer is not installed: longer = harder.

    Calibrated on nothing; it exists so the router still runs (and says so in its log).
    """

    def score(self, embedding: Sequence[float], text: str) -> float:
        words = len(text.split())
        return 1.0 - math.exp(-words / 60.0)

    def threshold_for_share(self, share: float) -> float:
        return 1.0 - min(1.0, max(0.0, share))


def load_scorer() -> DifficultyScorer:
    """The trained default scorer, or the length stand-in when it is missing."""
    try:
        package = importlib.import_module("gearshift.router.scorer")
        load_default_scorer = package.load_default_scorer
    except (ImportError, AttributeError):
        log.warning("difficulty scorer not installed; using the length stand-in")
        return LengthScorer()
    try:
        return PackageScorer(load_default_scorer())
    except (OSError, ValueError, TypeError) as exc:
        # Fail open: a router without its trained scorer still answers (it logs loudly).
        log.error("difficulty scorer failed to load (%s); using the length stand-in", exc)
        return LengthScorer()
