"""The storage contract both backends implement.

Tenant and source are hard filters on every call. `replace_document` is the only
write of chunks and is atomic: a reader sees a document's old chunks or its new
ones, never a mix, and a crash in the middle leaves the old ones.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from gearshift.retriever.records import ChunkRecord, Hit, SourceInfo, StoredDocument, WriteOutcome


class BackendError(RuntimeError):
    """The backend could not answer (down, timed out); the call is UNAVAILABLE."""


class Backend(Protocol):
    name: str

    async def open(self) -> None:
        """Connects / loads; must not fail when a remote backend is down."""
        ...

    async def close(self) -> None: ...

    async def ensure_source(self, tenant: str, source: str, now: float) -> None:
        """Creates an empty source if it does not exist yet."""
        ...

    async def content_hashes(
        self, tenant: str, source: str, document_ids: list[str]
    ) -> dict[str, tuple[str, int]]:
        """(content hash, chunk count) per stored document id (others are absent)."""
        ...

    async def replace_document(
        self, document: StoredDocument, chunks: list[ChunkRecord], now: float
    ) -> WriteOutcome:
        """Stores the document and its chunks in place of any previous version, in one
        transaction; returns the source's new content version."""
        ...

    async def delete(
        self, tenant: str, source: str, document_ids: list[str] | None, now: float
    ) -> WriteOutcome | None:
        """Deletes the listed documents, or the whole source when `document_ids` is None.
        None when the source does not exist."""
        ...

    async def vector_search(
        self, tenant: str, source: str, vector: npt.NDArray[np.float32], k: int
    ) -> list[Hit]:
        """Up to k chunks, most similar first; `score` and `vector_similarity` = cosine."""
        ...

    async def keyword_search(self, tenant: str, source: str, words: list[str], k: int) -> list[Hit]:
        """Up to k chunks matching any of the words, best full-text rank first."""
        ...

    async def sources(self, tenant: str, source: str | None) -> list[SourceInfo]:
        """Counts per source of the tenant (one, or all), sorted by name."""
        ...
