"""A multi-route plan: the request's own plan plus one child plan per branch.

Each branch's child `Plan` is what the executor runs for a single route today (routes to
try, grounded messages, a deadline), so a branch escalates, streams and is cancelled
exactly as a single-route request is. The request's plan keeps the decision, the cache
scope and the whole-request deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gearshift.router.core.plan import Plan
from gearshift.router.multi.policy import MultiPolicy
from gearshift.router.table.routing_table import Route
from gearshift.v1 import common_pb2, router_pb2

BranchKind = str  # "source", "model" or "general"


@dataclass
class Branch:
    """One route the question is sent to, and how it went."""

    name: str
    kind: BranchKind
    plan: Plan
    score: float = 0.0
    status: str = "planned"  # planned, ok, failed, late, cancelled
    error: str = ""
    latency_ms: float = 0.0
    usage: common_pb2.Usage = field(default_factory=common_pb2.Usage)
    text: str = ""
    finish: common_pb2.FinishReason.ValueType = common_pb2.FINISH_REASON_UNSPECIFIED
    larger: bool = False  # answered by the large tier (vote ties go its way)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def result(self) -> router_pb2.BranchResult:
        d = self.plan.decision
        route = d.route or (self.plan.routes[0].name if self.plan.routes else "")
        model = d.model or (self.plan.routes[0].model if self.plan.routes else "")
        tier = d.tier
        if not tier and self.plan.routes:
            tier = common_pb2.TIER_LLM if self.plan.routes[0].tier == "llm" else common_pb2.TIER_SLM
        return router_pb2.BranchResult(
            name=self.name,
            kind=self.kind,
            route=route,
            model=model,
            tier=tier,
            status=self.status,
            error=self.error,
            latency_ms=round(self.latency_ms, 3),
            usage=self.usage,
            score=self.score,
            source_content_version=d.source_content_version,
        )


@dataclass
class MultiPlan:
    """The request's plan, its policy, its branches and the difficulty-chosen model chain."""

    base: Plan
    policy: MultiPolicy
    branches: list[Branch]
    general: list[Route]  # synthesis runs here (the model difficulty chose)
    judge: list[Route]  # `best` asks this chain

    def record(self) -> None:
        """Writes every branch's state into the request's decision."""
        del self.base.decision.branches[:]
        self.base.decision.branches.extend(b.result() for b in self.branches)
