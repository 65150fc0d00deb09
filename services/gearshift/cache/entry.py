"""The cache's own record of an entry, independent of any backend's storage format."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from gearshift.v1 import cache_pb2, common_pb2


@dataclass
class Entry:
    """One cached answer plus what finding it needs (keys, embedding, expiry)."""

    id: str
    tenant: str
    scope: str
    context_digest: str
    scope_key: str
    exact_key: str
    question: str
    answer: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    created_at: float
    expires_at: float
    vector: npt.NDArray[np.float32]

    def record(self) -> tuple[Any, ...]:
        """Every field but the vector, in `RECORD_FIELDS` order (how backends store rows)."""
        return tuple(getattr(self, name) for name in RECORD_FIELDS)

    @classmethod
    def from_record(cls, record: Sequence[Any], vector: npt.NDArray[np.float32]) -> Entry:
        """The inverse of `record`, with the vector decoded by the backend."""
        return cls(**dict(zip(RECORD_FIELDS, record, strict=False)), vector=vector)

    def live(self, now: float) -> bool:
        return self.expires_at == 0 or self.expires_at > now

    def to_proto(self) -> cache_pb2.CacheEntry:
        return cache_pb2.CacheEntry(
            id=self.id,
            scope=cache_pb2.CacheScope(
                tenant=self.tenant, scope=self.scope, context_digest=self.context_digest
            ),
            question=self.question,
            answer=self.answer,
            model=self.model,
            usage=common_pb2.Usage(
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                total_tokens=self.total_tokens,
                cost_usd=self.cost_usd,
            ),
            created_at=self.created_at,
            expires_at=self.expires_at,
        )


# Column order of every backend's row: the scalar fields; the vector column comes last.
RECORD_FIELDS = tuple(f.name for f in fields(Entry) if f.name != "vector")


@dataclass(frozen=True)
class InvalidateFilter:
    """Which entries Invalidate removes: a tenant, optionally narrowed."""

    tenant: str
    scope: str | None = None
    context_digest: str | None = None
    id: str | None = None
    created_before: float | None = None
