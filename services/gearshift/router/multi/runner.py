"""Multi-routing end to end: policy -> multi-route plan -> fan-out -> combination -> chunks.

The pipeline hands a request here only when its policy asks for more than one route. The
chunks have the single-route shape, so both front ends stream and fold them unchanged:
the first carries the decision with the plan (every branch and how it went), the last
the finish reason, the usage summed over every call, the citations and the decision
again (`final_decision`) with the combination's outcome.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from opentelemetry import trace

from gearshift.router import metrics
from gearshift.router.clients.cache_client import CacheClient
from gearshift.router.core import caching
from gearshift.router.core.capabilities import uses_tools
from gearshift.router.core.executor import Executor, add_usage
from gearshift.router.core.plan import AUTO_MODELS
from gearshift.router.core.planner import Planner
from gearshift.router.multi.branches import MultiPlan
from gearshift.router.multi.combining import Combination
from gearshift.router.multi.concat import concat
from gearshift.router.multi.config import MultiConfig
from gearshift.router.multi.fanout import fan_out, not_enough
from gearshift.router.multi.judge import best
from gearshift.router.multi.planning import plan_multi
from gearshift.router.multi.policy import MultiPolicy, policy_from_proto
from gearshift.router.multi.synthesize import synthesize
from gearshift.router.multi.vote import vote
from gearshift.runtime.errors import FieldViolation, InvalidArgument
from gearshift.runtime.telemetry import current_trace_id
from gearshift.v1 import common_pb2, router_pb2

log = logging.getLogger(__name__)
# Strategies whose combination is a model call of its own (it needs time after the branches).
MODEL_COMBINED = ("synthesize", "best")
tracer = trace.get_tracer(__name__)

Strategy = Callable[[Combination], AsyncIterator[str]]
STRATEGY: dict[str, Strategy] = {
    "concat": concat,
    "synthesize": synthesize,
    "best": best,
    "vote": vote,
}


class MultiRouting:
    """Plans and runs multi-route requests with the single-route planner and executor."""

    def __init__(self, config: MultiConfig, planner: Planner, executor: Executor) -> None:
        self.config = config
        self.planner = planner
        self.executor = executor
        self.cache: CacheClient | None = planner.cache

    def policy(self, request: router_pb2.ChatRequest) -> MultiPolicy:
        """The request's policy; a pinned model makes the defaults single-route."""
        policy = policy_from_proto(request.multi, self.config.limits)
        if request.model not in AUTO_MODELS and not policy.explicit:
            return MultiPolicy()
        uncombinable = _uncombinable(request)
        if policy.multi and uncombinable:
            if not policy.explicit:  # the operator's default: such requests stay single-route
                return MultiPolicy()
            raise InvalidArgument(
                [
                    FieldViolation(
                        "multi",
                        f"cannot be combined with {field}: such answers do not merge",
                    )
                    for field in uncombinable
                ]
            )
        return policy

    async def plan(
        self,
        request: router_pb2.ChatRequest,
        tenant: str,
        time_remaining: float | None,
        policy: MultiPolicy,
        *,
        dry_run: bool = False,
    ) -> MultiPlan:
        return await plan_multi(
            self.planner, self.config, request, tenant, time_remaining, policy, dry_run=dry_run
        )

    async def run(self, plan: MultiPlan) -> AsyncIterator[router_pb2.ChatStreamChunk]:
        base, d = plan.base, plan.base.decision
        trace_id = current_trace_id()
        if base.hit is not None:
            d.route, d.tier, d.model = "cache", common_pb2.TIER_CACHE, base.hit.entry.model
            base.citations = [c for b in plan.branches for c in b.plan.citations]
            async for chunk in self.executor.run(base):
                yield chunk
            return
        reserve = self.config.combine_reserve_s if plan.policy.combine in MODEL_COMBINED else 0
        await fan_out(self.executor, plan, reserve)
        plan.record()
        answers = [b for b in plan.branches if b.ok]
        if len(answers) < plan.policy.min_successful:
            metrics.FAILURES.labels("min_successful").inc()
            raise not_enough(plan)
        combination = Combination(plan, self.executor, self.config, answers)
        parts: list[str] = []
        first = True
        with tracer.start_as_current_span("router.multi.combine") as span:
            span.set_attribute("gearshift.combine", plan.policy.combine)
            span.set_attribute("gearshift.branches.ok", len(answers))
            async for text in STRATEGY[plan.policy.combine](combination):
                parts.append(text)
                chunk = router_pb2.ChatStreamChunk(request_id=base.request_id, text_delta=text)
                if first:
                    first = False
                    chunk.decision.CopyFrom(d)
                    chunk.trace_id = trace_id
                yield chunk
            span.set_attribute("gearshift.combine.reason", combination.reason)
        d.combine_reason = combination.reason
        d.combined_by = combination.combined_by
        usage = common_pb2.Usage()
        for branch in plan.branches:
            add_usage(usage, branch.usage)
        add_usage(usage, combination.usage)
        finish = combination.finish or common_pb2.FINISH_REASON_STOP
        last = router_pb2.ChatStreamChunk(
            request_id=base.request_id,
            finish_reason=finish,
            usage=usage,
            citations=combination.citations,
            final_decision=d,
        )
        if first:
            last.decision.CopyFrom(d)
            last.trace_id = trace_id
        yield last
        metrics.record_answer(
            tenant=base.tenant,
            route="multi",
            tier=common_pb2.TIER_UNSPECIFIED,
            cache=d.cache,
            started=base.started,
            stream=base.stream,
        )
        self._store(plan, "".join(parts), finish, usage)

    def _store(
        self,
        plan: MultiPlan,
        answer: str,
        finish: common_pb2.FinishReason.ValueType,
        usage: common_pb2.Usage,
    ) -> None:
        base = plan.base
        if not caching.storable(self.cache, base, answer, finish):
            return
        if any(b.status in ("failed", "late") for b in plan.branches):
            # A branch that broke or ran late made this answer poorer than the policy
            # gives when all is well; caching it would serve that for the entry's life.
            log.debug("combined answer %s not cached: a branch failed", plan.base.request_id)
            return
        caching.store_answer(
            self.cache, base, answer, f"multi:{plan.policy.combine}", finish, usage
        )


def _uncombinable(request: router_pb2.ChatRequest) -> list[str]:
    """Request fields whose answers combining would break: tool calls, several choices,
    per-token log-probabilities and schema-bound JSON are one model's output, whole."""
    sampling = request.sampling
    fields = []
    if uses_tools(request):
        fields.append("tools")
    if sampling.n > 1:
        fields.append("n")
    if sampling.logprobs:
        fields.append("logprobs")
    if sampling.response_format.type in ("json_object", "json_schema"):
        fields.append("response_format")
    return fields
