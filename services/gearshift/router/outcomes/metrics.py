"""Prometheus metrics of outcome recording, feedback and shadow judging."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DECISIONS_RECORDED = Counter(
    "gearshift_router_decisions_recorded_total",
    "Answer decisions written to the outcome store.",
)
DECISIONS_DROPPED = Counter(
    "gearshift_router_decisions_dropped_total",
    "Decisions not recorded, by reason (queue_full: the store falls behind; store_error).",
    ["reason"],
)
FEEDBACK = Counter(
    "gearshift_router_feedback_total",
    "Feedback calls, by result (stored, not_found, invalid, duplicate).",
    ["result"],
)
SHADOW_JUDGMENTS = Counter(
    "gearshift_router_shadow_judgments_total",
    "Small-model answers considered for shadow judging, by result (graded, unparsed, "
    "failed, budget_spent, busy, no_llm_route).",
    ["result"],
)
SHADOW_TOKENS = Counter(
    "gearshift_router_shadow_tokens_total",
    "Tokens spent by shadow judging on the large tier (reference answers and judge calls).",
)
SHADOW_BUDGET_LEFT = Gauge(
    "gearshift_router_shadow_budget_tokens_left",
    "Tokens shadow judging may still spend today (UTC).",
)
