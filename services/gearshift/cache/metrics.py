"""Prometheus metrics of the cache (process-wide, labelled by backend)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LOOKUPS = Counter(
    "gearshift_cache_lookups_total",
    "Cache lookups by outcome (hit_exact, hit_semantic, miss, error).",
    ["backend", "outcome"],
)
HITS = Counter("gearshift_cache_hits_total", "Cache hits by kind (exact, semantic).", ["kind"])
MISSES = Counter("gearshift_cache_misses_total", "Cache misses (including fail-soft errors).")
LONG_QUESTIONS = Counter(
    "gearshift_cache_long_questions_total",
    "Lookups not matched by meaning: the question is longer than max_semantic_words.",
)
LOOKUP_SECONDS = Histogram(
    "gearshift_cache_lookup_seconds",
    "Time to answer a lookup, embedding included.",
    ["backend"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BACKEND_ERRORS = Counter(
    "gearshift_cache_backend_errors_total",
    "Backend calls that failed or timed out (the cache answered with a miss).",
    ["backend", "op"],
)
ENTRIES = Gauge("gearshift_cache_entries", "Live entries in the backend.", ["backend"])
EVICTIONS = Counter(
    "gearshift_cache_evictions_total", "Entries evicted by the size bound.", ["backend"]
)
STORES = Counter(
    "gearshift_cache_stores_total",
    "Store calls by result (stored, refused, error).",
    ["backend", "result"],
)
