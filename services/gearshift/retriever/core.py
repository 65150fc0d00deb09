"""What the retriever does, apart from gRPC: ingest one document, search, delete, count.

Ingestion checks a document's content hash before anything costly: an unchanged
document costs one indexed read. A new or changed one is chunked, its chunks are
embedded in batches on a worker thread (the event loop keeps serving searches),
and the backend swaps the old chunks for the new ones in one transaction. A search
ranks chunks by vector similarity and by keyword relevance and fuses the two with
reciprocal rank fusion (or uses one ranking when the caller asks for one mode).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gearshift.embeddings import Embedder, MicroBatcher
from gearshift.retriever import metrics
from gearshift.retriever.backends import Backend, BackendError
from gearshift.retriever.chunking import chunk_document, guess_media_type, markdown_title
from gearshift.retriever.fusion import query_words, reciprocal_rank_fusion
from gearshift.retriever.records import (
    ChunkRecord,
    Hit,
    SourceInfo,
    StoredDocument,
    WriteOutcome,
    content_hash,
)
from gearshift.retriever.settings import Settings
from gearshift.runtime.errors import NotFound, Unavailable

MODES = ("hybrid", "vector", "keyword")


@dataclass(frozen=True)
class DocumentIn:
    """A document as a caller sends it."""

    document_id: str
    text: str
    title: str = ""
    media_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestOutcome:
    document_id: str
    status: str  # created | updated | unchanged | failed
    chunks: int = 0
    error: str = ""


def unknown_source(tenant: str, source: str) -> NotFound:
    return NotFound(
        f"source {source!r} does not exist for tenant {tenant!r}; ingest documents into it "
        "first (gearshift sources ingest --source NAME PATH...)",
        reason="SOURCE_NOT_FOUND",
    )


class Retriever:
    """Sources over one backend; the embedder is attached once it has loaded."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.embedder: Embedder | None = None
        self.batcher: MicroBatcher | None = None

    def _backend_failed(self, op: str, exc: BackendError) -> Unavailable:
        metrics.BACKEND_ERRORS.labels(self.backend.name, op).inc()
        return Unavailable(f"retriever backend {self.backend.name} unavailable: {exc}")

    # -- ingest -----------------------------------------------------------------

    def refusal(self, doc: DocumentIn) -> str:
        """Why a document cannot be ingested ('' when it can); names the limit it breaks."""
        size = len(doc.text.encode("utf-8"))
        if size > self.settings.max_document_bytes:
            return (
                f"document is {size} bytes, over the limit max_document_bytes="
                f"{self.settings.max_document_bytes} (GEARSHIFT_RETRIEVER_MAX_DOCUMENT_BYTES)"
            )
        if not doc.text.strip():
            return "document is empty"
        if "\x00" in doc.text:
            return "document contains NUL characters; is it a binary file?"
        return ""

    async def ingest_one(self, tenant: str, source: str, doc: DocumentIn) -> IngestOutcome:
        """Ingests one document; its failure is reported, never raised (except backend
        outages, which stop the stream: nothing more could be stored)."""
        reason = self.refusal(doc)
        if reason:
            metrics.DOCUMENTS_INGESTED.labels(self.backend.name, "failed").inc()
            return IngestOutcome(doc.document_id, "failed", error=reason)
        media_type = doc.media_type or guess_media_type(doc.document_id)
        title = doc.title or (markdown_title(doc.text) if media_type == "text/markdown" else "")
        title = title or doc.document_id.rsplit("/", 1)[-1]
        digest = content_hash(
            doc.text, title, media_type, doc.metadata, self.settings.max_chunk_chars
        )
        try:
            stored = await self.backend.content_hashes(tenant, source, [doc.document_id])
        except BackendError as exc:
            raise self._backend_failed("ingest", exc) from exc
        previous = stored.get(doc.document_id)
        if previous is not None and previous[0] == digest:
            metrics.DOCUMENTS_INGESTED.labels(self.backend.name, "unchanged").inc()
            return IngestOutcome(doc.document_id, "unchanged", previous[1])
        chunks = chunk_document(doc.text, media_type, title, self.settings.max_chunk_chars)
        vectors = await self.embed_chunks([c.indexed_text for c in chunks])
        records = [ChunkRecord(c.index, c.title, c.text, vectors[i]) for i, c in enumerate(chunks)]
        stored_doc = StoredDocument(
            tenant, source, doc.document_id, title, media_type, dict(doc.metadata), digest
        )
        try:
            await self.backend.replace_document(stored_doc, records, time.time())
        except BackendError as exc:
            raise self._backend_failed("ingest", exc) from exc
        status = "created" if previous is None else "updated"
        metrics.DOCUMENTS_INGESTED.labels(self.backend.name, status).inc()
        metrics.CHUNKS_EMBEDDED.labels(self.backend.name).inc(len(records))
        return IngestOutcome(doc.document_id, status, len(records))

    async def embed_chunks(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embeds chunk texts in batches on a worker thread."""
        if self.embedder is None:
            raise Unavailable("retriever is warming up (embedding model not loaded yet)")
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return await asyncio.to_thread(self.embedder.embed, list(texts), self.settings.embed_batch)

    async def ensure_source(self, tenant: str, source: str) -> None:
        try:
            await self.backend.ensure_source(tenant, source, time.time())
        except BackendError as exc:
            raise self._backend_failed("ingest", exc) from exc

    # -- search -----------------------------------------------------------------

    async def search(
        self,
        tenant: str,
        source: str,
        query: str,
        vector: npt.NDArray[np.float32] | None,
        top_k: int,
        mode: str,
    ) -> tuple[list[Hit], str]:
        """The best `top_k` passages and the content version they come from."""
        started = time.perf_counter()
        info = await self.source_info(tenant, source)
        candidates = max(self.settings.candidates, top_k)
        try:
            rankings: list[list[Hit]] = []
            if mode in ("hybrid", "vector"):
                if vector is None:
                    if self.batcher is None:
                        raise Unavailable("retriever is warming up (embedding model not loaded)")
                    vector = await self.batcher.embed_vector(query)
                rankings.append(
                    await self.backend.vector_search(tenant, source, vector, candidates)
                )
            if mode in ("hybrid", "keyword"):
                words = query_words(query)
                rankings.append(
                    await self.backend.keyword_search(tenant, source, words, candidates)
                )
        except BackendError as exc:
            raise self._backend_failed("search", exc) from exc
        hits = (
            reciprocal_rank_fusion(rankings, self.settings.rrf_k)
            if mode == "hybrid"
            else rankings[0]
        )
        metrics.SEARCHES.labels(self.backend.name, mode).inc()
        metrics.SEARCH_SECONDS.labels(self.backend.name, mode).observe(
            time.perf_counter() - started
        )
        return hits[:top_k], info.content_version

    # -- delete / stats ---------------------------------------------------------

    async def delete(self, tenant: str, source: str, document_ids: list[str]) -> WriteOutcome:
        try:
            outcome = await self.backend.delete(tenant, source, document_ids or None, time.time())
        except BackendError as exc:
            raise self._backend_failed("delete", exc) from exc
        if outcome is None:
            raise unknown_source(tenant, source)
        return outcome

    async def sources(self, tenant: str, source: str | None) -> list[SourceInfo]:
        try:
            found = await self.backend.sources(tenant, source)
        except BackendError as exc:
            raise self._backend_failed("stats", exc) from exc
        for info in found:
            metrics.CHUNKS.labels(tenant, info.source).set(info.chunks)
        return found

    async def source_info(self, tenant: str, source: str) -> SourceInfo:
        found = await self.sources(tenant, source)
        if not found:
            raise unknown_source(tenant, source)
        return found[0]
