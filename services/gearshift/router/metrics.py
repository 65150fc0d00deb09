"""The router's Prometheus metrics: where traffic went, how fast, and what it cost.

These feed the Grafana dashboard shipped in the chart (route mix, cache hit rate,
latency by tier, tokens and cost by tenant).
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

from gearshift.runtime.metrics import child
from gearshift.v1 import common_pb2

REQUESTS = Counter(
    "gearshift_router_requests_total",
    "Requests answered, by tenant, route, tier (cache, slm, llm) and cache outcome.",
    ["tenant", "route", "tier", "cache"],
)
LATENCY = Histogram(
    "gearshift_router_request_seconds",
    "From receipt to the whole answer (unary) or its first text (streams), by tier.",
    ["tier", "stream"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
ESCALATIONS = Counter(
    "gearshift_router_escalations_total",
    "Backend attempts that failed or were cascaded, so a higher route was asked, by reason.",
    ["route", "reason"],
)
SCORING_FAILURES = Counter(
    "gearshift_router_scoring_failures_total",
    "Queries that could not be embedded or scored (routed by on_scoring_failure), by stage.",
    ["stage"],
)
SOURCE_FAILURES = Counter(
    "gearshift_router_source_failures_total",
    "Data source searches that failed, timed out or found nothing (the source was skipped), "
    "by source.",
    ["source"],
)
FAILURES = Counter(
    "gearshift_router_failures_total",
    "Requests no route could answer, by reason.",
    ["reason"],
)
TOKENS = Counter(
    "gearshift_router_tokens_total",
    "Tokens spent on backends, by tenant, tier and kind (prompt or completion).",
    ["tenant", "tier", "kind"],
)
COST = Counter(
    "gearshift_router_cost_usd_total",
    "Backend cost in US dollars reported by the backends' price tables, by tenant and tier.",
    ["tenant", "tier"],
)
CACHE_SAVED_TOKENS = Counter(
    "gearshift_router_cache_saved_tokens_total",
    "Tokens the original generation took for answers served from the cache, by tenant.",
    ["tenant"],
)
SCORER_RELOADS = Counter(
    "gearshift_router_scorer_reloads_total",
    "Scorer weights files loaded at run time, by result (loaded, invalid).",
    ["result"],
)


def tier_name(tier: common_pb2.Tier.ValueType) -> str:
    return common_pb2.Tier.Name(tier).removeprefix("TIER_").lower()


def cache_name(outcome: common_pb2.CacheOutcome.ValueType) -> str:
    return common_pb2.CacheOutcome.Name(outcome).removeprefix("CACHE_OUTCOME_").lower()


def record_answer(
    *,
    tenant: str,
    route: str,
    tier: common_pb2.Tier.ValueType,
    cache: common_pb2.CacheOutcome.ValueType,
    started: float,
    stream: bool,
) -> None:
    """Counts one answered request and its latency (`started` is time.monotonic())."""
    name = tier_name(tier)
    child(REQUESTS, tenant, route, name, cache_name(cache)).inc()
    child(LATENCY, name, "true" if stream else "false").observe(time.monotonic() - started)


def record_usage(tenant: str, tier: common_pb2.Tier.ValueType, usage: common_pb2.Usage) -> None:
    name = tier_name(tier)
    child(TOKENS, tenant, name, "prompt").inc(usage.prompt_tokens)
    child(TOKENS, tenant, name, "completion").inc(usage.completion_tokens)
    if usage.cost_usd:
        child(COST, tenant, name).inc(usage.cost_usd)
