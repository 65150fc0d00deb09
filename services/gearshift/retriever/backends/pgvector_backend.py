"""The shared backend: PostgreSQL with pgvector (HNSW) and full-text search (tsvector).

Every replica of the retriever sees the same sources. A document's chunks are
replaced in one transaction that also locks its source's row, so concurrent ingests
of one source serialise their content-version updates and a reader sees either the
old chunks or the new ones. Every call runs under a timeout (client side with
`asyncio.wait_for`, server side with `statement_timeout`) and the pool opens lazily,
so a dead database means quick `BackendError`s (UNAVAILABLE), never a hung call.

The GIN index on the tsvectors has no pending list (`fastupdate = off`): sources are
searched far more often than written, and an unmerged pending list is scanned whole by
every keyword search until a vacuum merges it.

The HNSW index spans every source, and pgvector before 0.8 filters after the index
scan: a small source beside a large one can come back short. A vector search that
returns fewer than k rows is therefore repeated as an exact scan of the source alone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from psycopg import AsyncConnection

from gearshift.embeddings import DIM
from gearshift.retriever.backends.base import BackendError
from gearshift.retriever.records import (
    EMPTY_VERSION,
    ChunkRecord,
    Hit,
    SourceInfo,
    StoredDocument,
    WriteOutcome,
    metadata_json,
    toggle_version,
)
from gearshift.storage.pgvector_pool import PgvectorPool

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA = f"""
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS gearshift_retriever_sources (
    tenant TEXT NOT NULL,
    source TEXT NOT NULL,
    content_version TEXT NOT NULL,
    last_ingested_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, source)
);
CREATE TABLE IF NOT EXISTS gearshift_retriever_documents (
    tenant TEXT NOT NULL,
    source TEXT NOT NULL,
    document_id TEXT NOT NULL,
    title TEXT NOT NULL,
    media_type TEXT NOT NULL,
    metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    PRIMARY KEY (tenant, source, document_id)
);
CREATE TABLE IF NOT EXISTS gearshift_retriever_chunks (
    id BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    source TEXT NOT NULL,
    document_id TEXT NOT NULL,
    chunk_index INTEGER NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    embedding vector({DIM}) NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A') || to_tsvector('english', text)
    ) STORED
);
CREATE INDEX IF NOT EXISTS gearshift_retriever_chunks_document
    ON gearshift_retriever_chunks (tenant, source, document_id);
CREATE INDEX IF NOT EXISTS gearshift_retriever_chunks_hnsw
    ON gearshift_retriever_chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX IF NOT EXISTS gearshift_retriever_chunks_tsv
    ON gearshift_retriever_chunks USING gin (tsv) WITH (fastupdate = off);
ALTER INDEX gearshift_retriever_chunks_tsv SET (fastupdate = off);
"""

_HIT_COLUMNS = "c.id, c.document_id, d.title, c.title, c.chunk_index, c.text, d.metadata"
_HIT_JOIN = (
    "gearshift_retriever_chunks c JOIN gearshift_retriever_documents d "
    "ON d.tenant = c.tenant AND d.source = c.source AND d.document_id = c.document_id"
)

# Keyword search ranks a bounded candidate set: `ts_rank_cd` reads every row it scores,
# and an OR of common words can match most of a large source. The candidates come from
# the GIN index: every chunk holding ALL the query's words (the ones the rank puts first)
# and the first matches of ANY word, each pass capped at keyword_rank_limit rows, so the
# rank runs over at most twice that many rows whatever the source's size.
_BOUNDED_KEYWORD = f"""
WITH candidates AS MATERIALIZED (
    (SELECT id FROM gearshift_retriever_chunks
     WHERE tenant = %(tenant)s AND source = %(source)s
       AND tsv @@ to_tsquery('english', %(every)s) LIMIT %(limit)s)
    UNION
    (SELECT id FROM gearshift_retriever_chunks
     WHERE tenant = %(tenant)s AND source = %(source)s
       AND tsv @@ to_tsquery('english', %(any)s) LIMIT %(limit)s)
), ranked AS (
    SELECT c.id, ts_rank_cd(c.tsv, to_tsquery('english', %(any)s)) AS rank
    FROM candidates JOIN gearshift_retriever_chunks c ON c.id = candidates.id
    ORDER BY rank DESC, c.id LIMIT %(k)s
)
SELECT {_HIT_COLUMNS}, ranked.rank FROM ranked
JOIN {_HIT_JOIN} ON c.id = ranked.id
ORDER BY ranked.rank DESC, c.id
"""


def _bounded_params(
    any_word: str, every_word: str, tenant: str, source: str, limit: int, k: int
) -> dict[str, Any]:
    return {
        "any": any_word,
        "every": every_word,
        "tenant": tenant,
        "source": source,
        "limit": limit,
        "k": k,
    }


class PgvectorBackend:
    """Sources in three PostgreSQL tables; HNSW on embeddings, GIN on tsvectors."""

    name = "pgvector"

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        pool_size: int = 4,
        ef_search: int = 100,
        keyword_rank_limit: int = 1000,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.keyword_rank_limit = keyword_rank_limit
        self.db = PgvectorPool(
            url,
            SCHEMA,
            schema_lock_id=7461627,
            error=BackendError,
            timeout_s=timeout_s,
            pool_size=pool_size,
            ef_search=ef_search,
        )

    async def open(self) -> None:
        """Opens the pool without waiting: a down database must not stop the service."""
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def _with_conn(
        self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]], timeout_s: float | None = None
    ) -> T:
        return await self.db.run(fn, timeout_s)

    # -- writes -----------------------------------------------------------------

    async def ensure_source(self, tenant: str, source: str, now: float) -> None:
        async def q(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO gearshift_retriever_sources VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (tenant, source, EMPTY_VERSION, now),
            )

        await self._with_conn(q)

    async def content_hashes(
        self, tenant: str, source: str, document_ids: list[str]
    ) -> dict[str, tuple[str, int]]:
        async def q(conn: AsyncConnection[Any]) -> dict[str, tuple[str, int]]:
            cur = await conn.execute(
                "SELECT document_id, content_hash, chunks FROM gearshift_retriever_documents "
                "WHERE tenant = %s AND source = %s AND document_id = ANY(%s)",
                (tenant, source, document_ids),
            )
            return {row[0]: (row[1], int(row[2])) for row in await cur.fetchall()}

        return await self._with_conn(q)

    async def _locked_version(self, conn: AsyncConnection[Any], tenant: str, source: str) -> Any:
        cur = await conn.execute(
            "SELECT content_version FROM gearshift_retriever_sources "
            "WHERE tenant = %s AND source = %s FOR UPDATE",
            (tenant, source),
        )
        return await cur.fetchone()

    async def _remove_document(
        self, conn: AsyncConnection[Any], tenant: str, source: str, document_id: str
    ) -> tuple[str, int] | None:
        """Deletes a document and its chunks; its old hash and chunk count (None: absent)."""
        cur = await conn.execute(
            "DELETE FROM gearshift_retriever_documents WHERE tenant = %s AND source = %s "
            "AND document_id = %s RETURNING content_hash",
            (tenant, source, document_id),
        )
        old = await cur.fetchone()
        cur = await conn.execute(
            "DELETE FROM gearshift_retriever_chunks WHERE tenant = %s AND source = %s "
            "AND document_id = %s",
            (tenant, source, document_id),
        )
        if old is None:
            return None
        return str(old[0]), cur.rowcount

    async def replace_document(
        self, document: StoredDocument, chunks: list[ChunkRecord], now: float
    ) -> WriteOutcome:
        doc = document

        async def q(conn: AsyncConnection[Any]) -> WriteOutcome:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO gearshift_retriever_sources VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (doc.tenant, doc.source, EMPTY_VERSION, now),
                )
                row = await self._locked_version(conn, doc.tenant, doc.source)
                version = str(row[0])
                removed = await self._remove_document(conn, doc.tenant, doc.source, doc.document_id)
                if removed is not None:
                    version = toggle_version(version, doc.document_id, removed[0])
                version = toggle_version(version, doc.document_id, doc.content_hash)
                await conn.execute(
                    "INSERT INTO gearshift_retriever_documents VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        doc.tenant,
                        doc.source,
                        doc.document_id,
                        doc.title,
                        doc.media_type,
                        metadata_json(doc.metadata),
                        doc.content_hash,
                        len(chunks),
                    ),
                )
                if chunks:
                    async with conn.cursor() as cur:
                        await cur.executemany(
                            "INSERT INTO gearshift_retriever_chunks (tenant, source, "
                            "document_id, chunk_index, title, text, embedding) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            [
                                (
                                    doc.tenant,
                                    doc.source,
                                    doc.document_id,
                                    c.index,
                                    c.title,
                                    c.text,
                                    np.asarray(c.vector, dtype=np.float32),
                                )
                                for c in chunks
                            ],
                        )
                await conn.execute(
                    "UPDATE gearshift_retriever_sources SET content_version = %s, "
                    "last_ingested_at = %s WHERE tenant = %s AND source = %s",
                    (version, now, doc.tenant, doc.source),
                )
            return WriteOutcome(documents=1, chunks=len(chunks), content_version=version)

        return await self._with_conn(q)

    async def delete(
        self, tenant: str, source: str, document_ids: list[str] | None, now: float
    ) -> WriteOutcome | None:
        async def q(conn: AsyncConnection[Any]) -> WriteOutcome | None:
            async with conn.transaction():
                row = await self._locked_version(conn, tenant, source)
                if row is None:
                    return None
                version = str(row[0])
                ids = document_ids
                if ids is None:
                    cur = await conn.execute(
                        "SELECT document_id FROM gearshift_retriever_documents "
                        "WHERE tenant = %s AND source = %s",
                        (tenant, source),
                    )
                    ids = [r[0] for r in await cur.fetchall()]
                documents = chunks = 0
                for document_id in ids:
                    removed = await self._remove_document(conn, tenant, source, document_id)
                    if removed is None:
                        continue
                    version = toggle_version(version, document_id, removed[0])
                    documents += 1
                    chunks += removed[1]
                if document_ids is None:
                    await conn.execute(
                        "DELETE FROM gearshift_retriever_sources WHERE tenant = %s AND source = %s",
                        (tenant, source),
                    )
                    return WriteOutcome(documents, chunks, "")
                await conn.execute(
                    "UPDATE gearshift_retriever_sources SET content_version = %s, "
                    "last_ingested_at = %s WHERE tenant = %s AND source = %s",
                    (version, now, tenant, source),
                )
                return WriteOutcome(documents, chunks, version)

        return await self._with_conn(q)

    # -- reads ------------------------------------------------------------------

    async def vector_search(
        self, tenant: str, source: str, vector: npt.NDArray[np.float32], k: int
    ) -> list[Hit]:
        query = np.asarray(vector, dtype=np.float32)

        async def q(conn: AsyncConnection[Any]) -> list[Hit]:
            cur = await conn.execute(
                f"SELECT {_HIT_COLUMNS}, 1 - (c.embedding <=> %s) FROM {_HIT_JOIN} "
                "WHERE c.tenant = %s AND c.source = %s ORDER BY c.embedding <=> %s LIMIT %s",
                (query, tenant, source, query, k),
            )
            rows = await cur.fetchall()
            if len(rows) < k:
                # Exact scan of this source alone (the CTE keeps the planner off HNSW).
                cur = await conn.execute(
                    "WITH s AS MATERIALIZED (SELECT id, embedding <=> %s AS distance "
                    "FROM gearshift_retriever_chunks WHERE tenant = %s AND source = %s) "
                    f"SELECT {_HIT_COLUMNS}, 1 - s.distance FROM s JOIN {_HIT_JOIN} "
                    "ON c.id = s.id ORDER BY s.distance LIMIT %s",
                    (query, tenant, source, k),
                )
                rows = await cur.fetchall()
            return [Hit.from_row(row[:7], float(row[7]), float(row[7])) for row in rows]

        return await self._with_conn(q)

    async def keyword_search(self, tenant: str, source: str, words: list[str], k: int) -> list[Hit]:
        if not words:
            return []
        any_word = " | ".join(words)
        every_word = " & ".join(words)
        limit = self.keyword_rank_limit

        async def q(conn: AsyncConnection[Any]) -> list[Hit]:
            if limit <= 0:  # rank every match (the unbounded form, kept for comparison)
                cur = await conn.execute(
                    f"SELECT {_HIT_COLUMNS}, ts_rank_cd(c.tsv, query) AS rank "
                    f"FROM {_HIT_JOIN}, to_tsquery('english', %s) query "
                    "WHERE c.tenant = %s AND c.source = %s AND c.tsv @@ query "
                    "ORDER BY rank DESC, c.id LIMIT %s",
                    (any_word, tenant, source, k),
                )
            else:
                cur = await conn.execute(
                    _BOUNDED_KEYWORD,
                    _bounded_params(any_word, every_word, tenant, source, limit, k),
                )
            return [Hit.from_row(row[:7], float(row[7])) for row in await cur.fetchall()]

        return await self._with_conn(q)

    async def sources(self, tenant: str, source: str | None) -> list[SourceInfo]:
        async def q(conn: AsyncConnection[Any]) -> list[SourceInfo]:
            cur = await conn.execute(
                "SELECT s.source, s.content_version, s.last_ingested_at, "
                "COUNT(d.document_id), COALESCE(SUM(d.chunks), 0) "
                "FROM gearshift_retriever_sources s LEFT JOIN gearshift_retriever_documents d "
                "ON d.tenant = s.tenant AND d.source = s.source "
                "WHERE s.tenant = %s AND (%s::text IS NULL OR s.source = %s) "
                "GROUP BY s.source, s.content_version, s.last_ingested_at ORDER BY s.source",
                (tenant, source, source),
            )
            return [
                SourceInfo(
                    source=row[0],
                    documents=int(row[3]),
                    chunks=int(row[4]),
                    content_version=row[1],
                    last_ingested_at=float(row[2]),
                )
                for row in await cur.fetchall()
            ]

        return await self._with_conn(q)
