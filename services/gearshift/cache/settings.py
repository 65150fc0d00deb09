"""Settings of the cache service (env prefix `GEARSHIFT_CACHE_`, or `--flags`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from gearshift.runtime.settings import MultiWorkerSettings


class Settings(MultiWorkerSettings):
    """What a deployment tunes: backend, bounds, and how many wrong hits it accepts."""

    model_config = SettingsConfigDict(env_prefix="GEARSHIFT_CACHE_", extra="ignore")

    grpc_port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    service_name: str = Field("gearshift-cache", description="OpenTelemetry service.name.")
    backend: Literal["usearch", "pgvector"] = Field(
        "usearch", description="usearch: in-process index; pgvector: shared PostgreSQL."
    )
    data_dir: str = Field(
        "~/.local/state/gearshift/cache",
        description="usearch backend: where the SQLite journal and index snapshots live.",
    )
    postgres_url: str = Field(
        "", description="pgvector backend: libpq URL, e.g. postgresql://user@host:5432/db."
    )
    db_timeout_s: float = Field(
        1.0, gt=0, description="Timeout of every backend call; on expiry a lookup is a miss."
    )
    pool_size: int = Field(8, ge=1, description="pgvector backend: connection pool size.")
    backend_retry_s: float = Field(
        2.0,
        ge=0,
        description="After a backend error, lookups miss at once for this long (no waiting).",
    )
    default_ttl_s: int = Field(
        86400, ge=0, description="TTL of entries stored without one; 0 means no expiry."
    )
    max_entries: int = Field(
        100_000, ge=1, description="Size bound; the oldest entries are evicted beyond it."
    )
    max_entry_bytes: int = Field(
        65536, ge=1, description="Largest question + answer (UTF-8 bytes) accepted by Store."
    )
    max_false_hit_rate: float = Field(
        0.10,
        gt=0,
        lt=1,
        description="Largest share of served semantic hits that may be wrong; picks the "
        "verifier's threshold from its calibration table.",
    )
    min_similarity: float = Field(
        0.6, ge=-1, le=1, description="Candidates below this cosine are not even verified."
    )
    candidates: int = Field(4, ge=1, le=64, description="Nearest entries the verifier judges.")
    max_semantic_words: int = Field(
        64,
        ge=0,
        description="Longer questions are served on exact repeats only: the verifier's "
        "false-hit rate was calibrated on questions of up to ~50 words, and behind a long "
        "shared context it serves wrong hits. 0 turns semantic hits off.",
    )
    allow_sampled: bool = Field(
        False,
        description="Policy for callers (the router): cache answers of sampled generations "
        "(temperature > 0). The cache cannot see sampling settings itself.",
    )
    snapshot_interval_s: float = Field(
        300.0, ge=0, description="usearch backend: how often index snapshots are written."
    )
    purge_interval_s: float = Field(
        60.0, gt=0, description="How often expired entries are deleted."
    )
    embed_max_batch: int = Field(32, ge=1, description="Largest embedding micro-batch.")
    embed_max_wait_ms: float = Field(
        1.0, ge=0, description="How long a micro-batch waits for more requests."
    )

    @model_validator(mode="after")
    def _workers_share_a_backend(self) -> Settings:
        if self.workers > 1 and self.backend != "pgvector":
            raise ValueError(
                "workers > 1 needs backend pgvector: the usearch index lives in one process"
            )
        return self
