"""The router's cascade decision: one call per small-model answer, from the pipeline.

Wraps the escalation estimator with the router's settings: the threshold comes from the
target escalation share (calibrated quantiles) unless a fixed threshold is set, and the
SLM server's response (finish reason, token log-probabilities) becomes the estimator's
signals. Kept apart from the pipeline so its planner/executor split can call it from
wherever the small model's answer is at hand; `plan.cascade_policy` builds it from the
pipeline's config, so this module needs nothing from the planner's side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from gearshift.router.cascade.estimator import EscalationEstimator, load_default_estimator
from gearshift.router.cascade.features import AnswerSignals
from gearshift.v1 import common_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EscalationVerdict:
    escalate: bool
    probability: float
    threshold: float

    def reason(self, route: str) -> str:
        sign = ">=" if self.escalate else "<"
        return (
            f"cascade: {route} answer escalate {self.probability:.3f} {sign} "
            f"threshold {self.threshold:.3f}"
        )


class EscalationPolicy:
    """Decides whether a small-model answer goes back to the large tier."""

    def __init__(
        self,
        share: float,
        fixed_threshold: float = -1.0,
        estimator: EscalationEstimator | None = None,
    ) -> None:
        self.estimator = estimator or load_default_estimator()
        if 0.0 <= fixed_threshold <= 1.0:
            self.threshold = fixed_threshold
        else:
            self.threshold = self.estimator.threshold_for_share(share)

    def judge(
        self,
        prompt: str,
        answer: str,
        finish_reason: common_pb2.FinishReason.ValueType,
        logprobs: Sequence[common_pb2.TokenLogprob] = (),
    ) -> EscalationVerdict:
        """The verdict on one (possibly partial, when streaming) answer."""
        signals = AnswerSignals(
            finish_length=finish_reason == common_pb2.FINISH_REASON_LENGTH,
            logprobs=tuple(lp.logprob for lp in logprobs),
        )
        probability = self.estimator.escalate(prompt, answer, signals)
        # A threshold of 1 (or more) means "never": a saturated 1.0 must not slip through.
        escalate = self.threshold < 1.0 and probability >= self.threshold
        return EscalationVerdict(escalate, probability, self.threshold)
