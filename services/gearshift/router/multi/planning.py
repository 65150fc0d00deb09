"""Multi-route planning: which options the question goes to, before any model is called.

The single-route planner does the common work once (validation, one embedding, selection
scores, difficulty). Then every option over the selection threshold and within
`multi_margin` of the best joins the plan, up to `max_routes` (sources and described model
routes alike), and the model difficulty chooses fills a remaining place as the general
branch. Sources are searched in parallel here, so the cache scope can name their content
versions; a source that cannot be searched becomes a failed branch, not a failed request.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry import trace

from gearshift.router.core import caching
from gearshift.router.core.plan import Plan
from gearshift.router.core.planner import Planner
from gearshift.router.multi.branches import Branch, MultiPlan
from gearshift.router.multi.config import MultiConfig
from gearshift.router.multi.policy import MultiPolicy
from gearshift.router.table.routing_table import Route, Snapshot
from gearshift.runtime.errors import FieldViolation, InvalidArgument
from gearshift.v1 import common_pb2, router_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


def child_plan(base: Plan, routes: list[Route], *, pinned: bool = False) -> Plan:
    """A plan for one branch (or one combining call): the request's, without cache or id."""
    return Plan(
        request_id=base.request_id,
        tenant=base.tenant,
        messages=list(base.messages),
        sampling=base.sampling,
        decision=router_pb2.RouteDecision(),
        routes=list(routes),
        pinned=pinned,
        question=base.question,
        embedding=base.embedding,
        deadline=base.deadline,
    )


async def plan_multi(
    planner: Planner,
    config: MultiConfig,
    request: router_pb2.ChatRequest,
    tenant: str,
    time_remaining: float | None,
    policy: MultiPolicy,
    *,
    dry_run: bool = False,
) -> MultiPlan:
    """The multi-route plan of a request whose policy asks for more than one route."""
    base = await planner.plan(request, tenant, time_remaining, dry_run=True, cache=False)
    if base.pinned or base.source_pinned:
        raise InvalidArgument(
            [
                FieldViolation(
                    "multi.max_routes",
                    f"model {request.model!r} pins one route; send model 'auto' to "
                    "multi-route, or max_routes 1",
                )
            ]
        )
    snapshot = planner.table.snapshot
    d = base.decision
    d.source = ""
    d.combine = policy.combine
    general = _general_chain(planner, base, snapshot)
    branches = _pick(planner, config, base, snapshot, policy, general)
    d.route, d.tier, d.model = "multi", common_pb2.TIER_UNSPECIFIED, ""
    d.reasons.append(
        f"multi-route ({policy.describe()}): " + ", ".join(f"{b.kind} {b.name}" for b in branches)
    )
    if not dry_run:
        await asyncio.gather(*(_search(planner, b) for b in branches if b.kind == "source"))
    judge = _judge_chain(planner, config, snapshot, general)
    plan = MultiPlan(base, policy, branches, general, judge)
    await _cache(planner, request, plan, dry_run)
    plan.record()
    return plan


def _general_chain(planner: Planner, base: Plan, snapshot: Snapshot) -> list[Route]:
    """The routes difficulty chooses for this question (as with no options at all)."""
    scratch = child_plan(base, [])
    scratch.scoring_error = base.scoring_error
    planner.choose(scratch, snapshot, None)
    d = base.decision
    d.difficulty, d.threshold = scratch.decision.difficulty, scratch.decision.threshold
    d.reasons.extend(scratch.decision.reasons)
    return scratch.routes


def _pick(
    planner: Planner,
    config: MultiConfig,
    base: Plan,
    snapshot: Snapshot,
    policy: MultiPolicy,
    general: list[Route],
) -> list[Branch]:
    d = base.decision
    threshold = planner.config.selection_threshold
    fitting = [
        c for c in d.candidates if c.score >= threshold and c.exclude_similarity < c.similarity
    ]
    best = fitting[0].score if fitting else 0.0
    branches: list[Branch] = []
    for cand in fitting:
        if len(branches) >= policy.max_routes:
            break
        if cand.score < best - config.margin:
            d.reasons.append(
                f"multi: {cand.name} {cand.score:.3f} is more than the margin "
                f"{config.margin:.3f} below the best {best:.3f}"
            )
            continue
        if cand.kind == "source":
            source = snapshot.source(cand.name)
            if source is None:
                continue
            if not planner.table.source_usable(source):
                d.reasons.append(f"multi: skipped source {source.name}: retriever breaker open")
                continue
            branch = Branch(source.name, "source", child_plan(base, general), cand.score)
            branch.plan.source = source
            branches.append(branch)
        else:
            route = snapshot.by_name.get(cand.name)
            if route is None:
                continue
            if not planner.table.route_usable(route):
                d.reasons.append(
                    f"multi: skipped {route.name}: {planner.table.why_unusable(route)}"
                )
                continue
            # The branch IS this route: no escalation to another model.
            branches.append(
                Branch(route.name, "model", child_plan(base, [route], pinned=True), cand.score)
            )
    taken = {b.plan.routes[0].name for b in branches if b.kind == "model"}
    if len(branches) < policy.max_routes and general and general[0].name not in taken:
        branches.append(Branch(general[0].name, "general", child_plan(base, general)))
    return branches


async def _search(planner: Planner, branch: Branch) -> None:
    """Grounds the branch's prompt in its source; a failed search fails only the branch."""
    source = branch.plan.source
    assert source is not None
    await planner.retrieve(branch.plan, source)
    if branch.plan.source is None:
        branch.status = "failed"
        branch.error = branch.plan.decision.reasons[-1] if branch.plan.decision.reasons else ""
    else:
        branch.plan.decision.reasons.clear()


def _judge_chain(
    planner: Planner, config: MultiConfig, snapshot: Snapshot, general: list[Route]
) -> list[Route]:
    """The judge of `best`: the first usable route of the judge tier, with its fallbacks."""
    for route in snapshot.tier(config.judge_tier):
        if planner.table.route_usable(route):
            return planner.failover_chain(route, snapshot)
    return general


async def _cache(
    planner: Planner, request: router_pb2.ChatRequest, plan: MultiPlan, dry_run: bool
) -> None:
    """Looks the combined answer up under a scope naming the policy and the branches.

    A single-route scope is "auto", a route or "source/<name>@<version>"; a multi-route
    scope starts with "multi/", so neither kind of answer is ever served for the other.
    """
    base = plan.base
    lookup, base.store = caching.cache_policy(planner.cache, planner.config, request, base)
    if not base.embedding:
        lookup = base.store = False
        base.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
    if not (lookup or base.store) or dry_run:
        base.store = False
        return
    names = ",".join(
        f"{b.name}@{b.plan.decision.source_content_version}" if b.kind == "source" else b.name
        for b in plan.branches
        if b.status == "planned"
    )
    base.scope = caching.cache_scope(
        base.tenant, f"{plan.policy.key()}/{names}", base.messages, request.sampling
    )
    if not lookup or planner.cache is None:
        return
    await caching.lookup(planner.cache, base)  # a hit answers the whole request
