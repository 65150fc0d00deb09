"""The cache step, end to end: whether to look up and store, the lookup, the store.

One place for single-route plans (the planner looks up, the executor stores) and for
multi-route plans (multi/planning.py looks up, multi/runner.py stores). Callers keep only
what is theirs: the scope name (a route, a source version, or multi-routing's `multi/...`),
what a hit means for their decision, and multi-routing's refusal to store a combination
a failed or late branch made poorer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gearshift.router.clients.cache_client import CacheClient
from gearshift.router.core.context_digest import (
    context_digest,
    effective_temperature,
    is_sampled,
)
from gearshift.router.core.plan import PipelineConfig, Plan
from gearshift.router.core.request_options import cache_bypass_reason, structured_answer_problem
from gearshift.v1 import cache_pb2, common_pb2, router_pb2

log = logging.getLogger(__name__)

HITS = (common_pb2.CACHE_OUTCOME_HIT_EXACT, common_pb2.CACHE_OUTCOME_HIT_SEMANTIC)


def cache_policy(
    cache: CacheClient | None,
    config: PipelineConfig,
    request: router_pb2.ChatRequest,
    plan: Plan,
) -> tuple[bool, bool]:
    """(look up?, store?) from the caller's policy, the sampling settings and config."""
    policy = request.cache_policy
    reasons = plan.decision.reasons
    if cache is None:
        plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
        return False, False
    if policy == router_pb2.CACHE_POLICY_BYPASS:
        plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
        reasons.append("cache bypassed by the caller")
        return False, False
    if why := cache_bypass_reason(request):
        plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
        reasons.append(f"cache bypassed: {why}")
        return False, False
    if is_sampled(request.sampling) and not config.store_sampled:
        plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
        temperature = effective_temperature(request.sampling)
        reasons.append(f"cache bypassed: sampled generation (temperature {temperature:g})")
        return False, False
    lookup = policy in (router_pb2.CACHE_POLICY_UNSPECIFIED, router_pb2.CACHE_POLICY_NO_STORE)
    store = policy in (router_pb2.CACHE_POLICY_UNSPECIFIED, router_pb2.CACHE_POLICY_REFRESH)
    if not lookup:
        plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
        reasons.append("cache lookup skipped (refresh)")
    return lookup, store


def cache_scope(
    tenant: str,
    name: str,
    messages: Sequence[common_pb2.ChatMessage],
    sampling: common_pb2.SamplingParams,
) -> cache_pb2.CacheScope:
    """The scope answers are looked up and stored under: tenant, scope name, context."""
    return cache_pb2.CacheScope(
        tenant=tenant, scope=name, context_digest=context_digest(messages, sampling)
    )


async def lookup(cache: CacheClient, plan: Plan) -> bool:
    """Looks the plan's question up under its scope; True on a hit.

    On a hit the plan holds it (`plan.hit`) and will not store; what the hit means for the
    decision's route is the caller's to say.
    """
    assert plan.scope is not None
    found = await cache.lookup(plan.scope, plan.question, plan.embedding)
    plan.decision.cache = found.outcome
    if found.outcome not in HITS:
        return False
    plan.hit = found
    plan.store = False
    plan.decision.cache_similarity = found.similarity
    plan.decision.reasons.append(f"cache hit (similarity {found.similarity:.3f})")
    return True


def storable(
    cache: CacheClient | None,
    plan: Plan,
    answer: str,
    finish: common_pb2.FinishReason.ValueType,
) -> bool:
    """Whether the plan stores its answers and this one is whole (it stopped, with text)."""
    return (
        plan.store
        and cache is not None
        and plan.scope is not None
        and finish == common_pb2.FINISH_REASON_STOP
        and bool(answer)
    )


def store_answer(
    cache: CacheClient | None,
    plan: Plan,
    answer: str,
    model: str,
    finish: common_pb2.FinishReason.ValueType,
    usage: common_pb2.Usage,
) -> None:
    """Stores a finished answer under the plan's scope, in the background, when it may."""
    if cache is None or plan.scope is None or not storable(cache, plan, answer, finish):
        return
    if problem := structured_answer_problem(plan.sampling.response_format, answer):
        log.warning("request %s: structured answer not cached: %s", plan.request_id, problem)
        return
    cache.store_in_background(
        cache_pb2.StoreRequest(
            scope=plan.scope,
            text=plan.question,
            embedding=plan.embedding,
            answer=answer,
            model=model,
            finish_reason=finish,
            usage=usage,
        )
    )
