"""Settings of the retrieval service (env prefix `GEARSHIFT_RETRIEVER_`, or `--flags`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from gearshift.runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """What a deployment tunes: where documents live, how they are cut, and the limits."""

    model_config = SettingsConfigDict(env_prefix="GEARSHIFT_RETRIEVER_", extra="ignore")

    grpc_port: int = Field(50055, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    service_name: str = Field("gearshift-retriever", description="OpenTelemetry service.name.")
    backend: Literal["usearch", "pgvector"] = Field(
        "usearch",
        description="usearch: embedded (usearch vectors + SQLite FTS5 under data_dir); "
        "pgvector: shared PostgreSQL (pgvector + full-text search).",
    )
    data_dir: str = Field(
        "~/.local/state/gearshift/retriever",
        description="usearch backend: where the SQLite database and index snapshots live.",
    )
    postgres_url: str = Field(
        "", description="pgvector backend: libpq URL, e.g. postgresql://user@host:5432/db."
    )
    api_keys_file: str = Field(
        "",
        description="YAML mapping API key -> tenant (a mounted Secret; reloaded on change), "
        "the router's format; tenant '*' marks a service key that may act on any tenant. "
        "Set: every call needs `authorization: Bearer <key>` (else UNAUTHENTICATED). "
        "Empty: no key is checked.",
    )
    db_timeout_s: float = Field(
        5.0, gt=0, description="Timeout of every backend call; on expiry the call is UNAVAILABLE."
    )
    pool_size: int = Field(4, ge=1, description="pgvector backend: connection pool size.")
    max_document_bytes: int = Field(
        1_048_576, ge=1, description="Largest document (UTF-8 bytes) Ingest accepts."
    )
    max_documents_per_stream: int = Field(
        10_000, ge=1, description="Most documents one Ingest stream may carry."
    )
    max_chunk_chars: int = Field(
        1200,
        ge=200,
        le=20_000,
        description="Largest chunk in characters; sections longer than this are split at "
        "paragraph, then sentence, then word boundaries.",
    )
    candidates: int = Field(
        50,
        ge=1,
        le=1000,
        description="Hits each ranking (vector, keyword) contributes before fusion.",
    )
    keyword_rank_limit: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="pgvector backend: keyword search ranks at most twice this many chunks "
        "(those holding every query word, then those holding any, each capped at this), so "
        "its cost stays bounded on a large source; 0 ranks every match.",
    )
    rrf_k: int = Field(
        60, ge=1, description="Reciprocal rank fusion constant: score = sum 1 / (rrf_k + rank)."
    )
    embed_batch: int = Field(32, ge=1, description="Chunks embedded per model call at ingest.")
    embed_max_batch: int = Field(32, ge=1, description="Largest query-embedding micro-batch.")
    embed_max_wait_ms: float = Field(
        1.0, ge=0, description="How long a query micro-batch waits for more requests."
    )
