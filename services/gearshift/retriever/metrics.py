"""Prometheus metrics of the retriever (process-wide, labelled by backend)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SEARCHES = Counter("gearshift_retriever_searches_total", "Searches by mode.", ["backend", "mode"])
SEARCH_SECONDS = Histogram(
    "gearshift_retriever_search_seconds",
    "Time to answer a search, query embedding included.",
    ["backend", "mode"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DOCUMENTS_INGESTED = Counter(
    "gearshift_retriever_documents_ingested_total",
    "Ingested documents by status (created, updated, unchanged, failed).",
    ["backend", "status"],
)
CHUNKS_EMBEDDED = Counter(
    "gearshift_retriever_chunks_embedded_total", "Chunks embedded at ingestion.", ["backend"]
)
BACKEND_ERRORS = Counter(
    "gearshift_retriever_backend_errors_total",
    "Backend calls that failed or timed out (answered UNAVAILABLE).",
    ["backend", "op"],
)
CHUNKS = Gauge("gearshift_retriever_chunks", "Chunks per source.", ["tenant", "source"])
