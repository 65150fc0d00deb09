"""Feedback: validates an outcome, finds the decision it refers to, stores it once.

Shared by the gRPC `RouterService.Feedback` and the OpenAI API's `POST /v1/feedback`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator

from gearshift.router.outcomes import metrics
from gearshift.router.outcomes.recorder import DecisionRecorder
from gearshift.router.outcomes.records import (
    MAX_COMMENT,
    SOURCE_USER,
    AlreadyExists,
    Decision,
    Outcome,
    bare_response_id,
)
from gearshift.router.outcomes.store import OutcomeStore
from gearshift.runtime.errors import FieldViolation, InvalidArgument, NotFound, Unavailable
from gearshift.v1 import common_pb2, router_pb2

log = logging.getLogger(__name__)

TIERS = {"slm": common_pb2.TIER_SLM, "llm": common_pb2.TIER_LLM}


def feedback_score(request: router_pb2.FeedbackRequest) -> float:
    """The score in [0, 1] from `score` or `good`; INVALID_ARGUMENT naming the field."""
    violations = []
    if not bare_response_id(request.response_id):
        violations.append(FieldViolation("response_id", "is required"))
    score = 0.0
    if request.HasField("score"):
        score = request.score
        if not (math.isfinite(score) and 0.0 <= score <= 1.0):
            violations.append(FieldViolation("score", f"must be in [0, 1], got {score!r}"))
    elif request.HasField("good"):
        score = 1.0 if request.good else 0.0
    else:
        violations.append(FieldViolation("score", "give a score in [0, 1] or good true/false"))
    if len(request.comment) > MAX_COMMENT:
        violations.append(FieldViolation("comment", f"at most {MAX_COMMENT} characters"))
    if violations:
        metrics.FEEDBACK.labels("invalid").inc()
        raise InvalidArgument(violations)
    return score


@contextlib.asynccontextmanager
async def store_errors() -> AsyncIterator[None]:
    """A store that cannot be reached is UNAVAILABLE (retryable), not INTERNAL."""
    try:
        yield
    except (OSError, TimeoutError, RuntimeError) as exc:
        raise Unavailable(
            f"the outcome store cannot be reached ({type(exc).__name__}); retry later",
            reason="OUTCOME_STORE_UNAVAILABLE",
        ) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):  # psycopg's errors are no OSErrors
            raise Unavailable(
                f"the outcome store failed ({type(exc).__name__}); retry later",
                reason="OUTCOME_STORE_UNAVAILABLE",
            ) from exc
        raise


class OutcomeService:
    """Stores outcomes (user feedback and judge grades) against recorded decisions."""

    def __init__(
        self,
        store: OutcomeStore,
        recorder: DecisionRecorder,
        timeout_s: float = 2.0,
        settle_s: float = 0.0,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.timeout_s = timeout_s
        # With a store shared by replicas, the answer may come from another replica
        # whose queue is not written yet: look again once after its flush interval.
        self.settle_s = settle_s

    async def decision(self, tenant: str, response_id: str) -> Decision:
        """The recorded decision (flushing queued ones first); NOT_FOUND otherwise."""
        async with store_errors():
            # Always: a batch being written right now is no longer pending, and flush()
            # waits for that write before returning.
            await asyncio.wait_for(self.recorder.flush(), self.timeout_s)
            found = await self.store.get_decision(tenant, response_id)
            if found is None and self.settle_s > 0:
                await asyncio.sleep(self.settle_s)
                found = await self.store.get_decision(tenant, response_id)
        if found is None:
            metrics.FEEDBACK.labels("not_found").inc()
            raise NotFound(
                f"no answer with response id {response_id!r} for this tenant (ids are those "
                "of generated answers; cache hits and dry runs are not recorded, and "
                "unrated answers expire)",
                reason="UNKNOWN_RESPONSE",
            )
        return found

    async def add(self, outcome: Outcome) -> bool:
        """Stores an outcome; False when its source already rated this answer."""
        async with store_errors():
            return await self.store.add_outcome(outcome)
        raise AssertionError("unreachable")  # pragma: no cover (mypy: the cm may swallow)

    async def feedback(
        self, tenant: str, request: router_pb2.FeedbackRequest
    ) -> router_pb2.FeedbackResponse:
        score = feedback_score(request)
        response_id = bare_response_id(request.response_id)
        decision = await self.decision(tenant, response_id)
        stored = await self.add(
            Outcome(
                tenant=tenant,
                response_id=response_id,
                source=SOURCE_USER,
                score=score,
                other_tier_better=(
                    request.other_tier_better if request.HasField("other_tier_better") else None
                ),
                comment=request.comment,
            )
        )
        if not stored:
            metrics.FEEDBACK.labels("duplicate").inc()
            raise AlreadyExists(
                f"feedback for response {response_id!r} was already given; it is kept as "
                "first given",
                reason="FEEDBACK_EXISTS",
            )
        metrics.FEEDBACK.labels("stored").inc()
        return router_pb2.FeedbackResponse(
            response_id=response_id,
            score=score,
            tier=TIERS.get(decision.tier, common_pb2.TIER_UNSPECIFIED),
            route=decision.route,
        )
