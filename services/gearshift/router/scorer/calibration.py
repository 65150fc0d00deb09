"""RouteLLM-style threshold calibration: "send at most x of traffic to the large tier".

The threshold for a share x is the (1 - x) quantile of scores on reference traffic: a
query goes to the large tier when its score is at or above it, so about x of traffic
like the reference does. The quantiles are stored with the weights, so the router can
calibrate any route's `maxShare` without the training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

QUANTILE_LEVELS = 1001


@dataclass(frozen=True)
class Calibration:
    """Score quantiles of reference traffic at levels 0, 1/(m-1), ..., 1."""

    quantiles: npt.NDArray[np.float64]

    @classmethod
    def from_scores(
        cls, scores: Sequence[float] | npt.NDArray[np.floating], levels: int = QUANTILE_LEVELS
    ) -> Calibration:
        """Calibration from reference scores (ideally out-of-fold, as at run time)."""
        values = np.asarray(scores, dtype=np.float64)
        if values.size == 0:
            raise ValueError("calibration needs at least one reference score")
        grid = np.linspace(0.0, 1.0, levels)
        quantiles: npt.NDArray[np.float64] = np.quantile(values, grid).astype(np.float64)
        return cls(quantiles=quantiles)

    def threshold_for_share(self, share: float) -> float:
        """Score threshold sending at most `share` (in [0, 1]) of traffic to the large tier.

        Share 0 returns a threshold above every possible score (scores are probabilities,
        so just above 1); share 1 returns the lowest reference score.
        """
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        if share <= 0.0:
            return float(np.nextafter(max(1.0, float(self.quantiles[-1])), np.inf))
        grid = np.linspace(0.0, 1.0, self.quantiles.size)
        return float(np.interp(1.0 - share, grid, self.quantiles))

    def share_for_threshold(self, threshold: float) -> float:
        """Expected share of reference traffic scoring at or above `threshold`."""
        grid = np.linspace(0.0, 1.0, self.quantiles.size)
        if threshold > self.quantiles[-1]:
            return 0.0
        if threshold <= self.quantiles[0]:
            return 1.0
        return float(1.0 - np.interp(threshold, self.quantiles, grid))
