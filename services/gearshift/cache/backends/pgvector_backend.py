"""The shared backend: PostgreSQL + pgvector (HNSW), for many cache replicas.

Every replica sees the same entries, so a paraphrase answered behind one replica
is a hit behind all of them. Tenant, scope and context digest are WHERE clauses
(hard filters) on every query. Every database call runs under a timeout (client
side with `asyncio.wait_for`, server side with `statement_timeout`), and the pool
opens lazily, so a dead database means quick `BackendError`s, which the service
turns into misses.

The HNSW index spans every tenant, and pgvector before 0.8 applies the WHERE clause
after the index scan: when the planner picks the index for a scope that holds a small
share of the table (stale statistics right after a tenant's first stores are enough),
the `ef_search` nearest rows may all belong to other scopes and the lookup finds
nothing although the scope has entries. A search that returns fewer than k rows is
therefore repeated as an exact scan of the scope alone, capped at
`EXACT_FALLBACK_ROWS` rows so a huge scope never turns into a full-table sort.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from psycopg import AsyncConnection

from gearshift.cache.backends.base import BackendError
from gearshift.cache.entry import RECORD_FIELDS, Entry, InvalidateFilter
from gearshift.embeddings import DIM
from gearshift.storage.pgvector_pool import PgvectorPool

log = logging.getLogger(__name__)

T = TypeVar("T")

_COLUMNS = ", ".join(RECORD_FIELDS) + ", embedding"

# Largest scope the exact fallback scans (about 20 ms of distance computations).
EXACT_FALLBACK_ROWS = 50_000
_LIVE = "scope_key = %s AND (expires_at = 0 OR expires_at > %s)"

SCHEMA = f"""
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS gearshift_cache_entries (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    scope TEXT NOT NULL,
    context_digest TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    exact_key TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    embedding vector({DIM}) NOT NULL
);
CREATE INDEX IF NOT EXISTS gearshift_cache_hnsw
    ON gearshift_cache_entries USING hnsw (embedding vector_cosine_ops);
CREATE INDEX IF NOT EXISTS gearshift_cache_scope ON gearshift_cache_entries (scope_key);
CREATE INDEX IF NOT EXISTS gearshift_cache_exact ON gearshift_cache_entries (exact_key);
CREATE INDEX IF NOT EXISTS gearshift_cache_tenant
    ON gearshift_cache_entries (tenant, scope, context_digest);
CREATE INDEX IF NOT EXISTS gearshift_cache_created ON gearshift_cache_entries (created_at);
"""


def _as_array(value: Any) -> npt.NDArray[np.float32]:
    """pgvector returns numpy arrays or `Vector` objects depending on the version."""
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


def _row_to_entry(row: tuple[Any, ...]) -> Entry:
    return Entry.from_record(row, _as_array(row[-1]))


class PgvectorBackend:
    """Entries in one PostgreSQL table with an HNSW index on the embedding."""

    name = "pgvector"

    def __init__(
        self,
        url: str,
        timeout_s: float = 1.0,
        pool_size: int = 8,
        ef_search: int = 100,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.db = PgvectorPool(
            url,
            SCHEMA,
            schema_lock_id=7461626,
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

    async def get_exact(self, scope_key: str, exact_key: str, now: float) -> Entry | None:
        async def q(conn: AsyncConnection[Any]) -> Entry | None:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM gearshift_cache_entries WHERE exact_key = %s "
                "AND scope_key = %s AND (expires_at = 0 OR expires_at > %s) "
                "ORDER BY created_at DESC LIMIT 1",
                (exact_key, scope_key, now),
            )
            row = await cur.fetchone()
            return _row_to_entry(row) if row else None

        return await self._with_conn(q)

    async def search(
        self, scope_key: str, vector: npt.NDArray[np.float32], k: int, now: float
    ) -> list[tuple[Entry, float]]:
        async def q(conn: AsyncConnection[Any]) -> list[tuple[Entry, float]]:
            cur = await conn.execute(
                f"SELECT {_COLUMNS}, 1 - (embedding <=> %s) AS sim FROM gearshift_cache_entries "
                f"WHERE {_LIVE} ORDER BY embedding <=> %s LIMIT %s",
                (vector, scope_key, now, vector, k),
            )
            rows = await cur.fetchall()
            if len(rows) < k:
                # The materialised CTE cannot use the HNSW index: an exact scan of the scope.
                cur = await conn.execute(
                    f"WITH scope AS MATERIALIZED (SELECT {_COLUMNS} FROM gearshift_cache_entries "
                    f"WHERE {_LIVE} LIMIT %s) "
                    f"SELECT {_COLUMNS}, 1 - (embedding <=> %s) AS sim FROM scope "
                    "ORDER BY embedding <=> %s LIMIT %s",
                    (scope_key, now, EXACT_FALLBACK_ROWS, vector, vector, k),
                )
                rows = await cur.fetchall()
            return [(_row_to_entry(row[:-1]), float(row[-1])) for row in rows]

        return await self._with_conn(q)

    async def put(self, entry: Entry, max_entries: int) -> int:
        async def q(conn: AsyncConnection[Any]) -> int:
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO gearshift_cache_entries ({_COLUMNS}) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (*entry.record(), entry.vector),
                )
            # Eviction is best effort and shared by all replicas: delete the oldest
            # beyond the bound (an estimate first so the common case costs one query).
            cur = await conn.execute("SELECT count(*) FROM gearshift_cache_entries")
            row = await cur.fetchone()
            excess = int(row[0]) - max_entries if row else 0
            if excess <= 0:
                return 0
            # Expired entries go first; they are not counted as evictions.
            cur = await conn.execute(
                "DELETE FROM gearshift_cache_entries WHERE expires_at > 0 AND expires_at <= %s",
                (time.time(),),
            )
            excess -= max(int(cur.rowcount), 0)
            if excess <= 0:
                return 0
            cur = await conn.execute(
                "DELETE FROM gearshift_cache_entries WHERE seq IN (SELECT seq FROM "
                "gearshift_cache_entries ORDER BY created_at, seq LIMIT %s)",
                (excess,),
            )
            return int(cur.rowcount)

        return await self._with_conn(q)

    async def put_many(self, entries: list[Entry], timeout_s: float = 600.0) -> None:
        """Bulk load with COPY (benchmarks, migrations); no eviction."""

        async def q(conn: AsyncConnection[Any]) -> None:
            await conn.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
            try:
                async with conn.cursor() as cur:
                    async with cur.copy(
                        f"COPY gearshift_cache_entries ({_COLUMNS}) FROM STDIN"
                    ) as copy:
                        for e in entries:
                            await copy.write_row(
                                (
                                    *e.record(),
                                    "[" + ",".join(f"{x:.7g}" for x in e.vector) + "]",
                                )
                            )
            finally:
                await conn.execute(f"SET statement_timeout = {int(self.timeout_s * 1000)}")

        await self._with_conn(q, timeout_s=timeout_s)

    async def invalidate(self, what: InvalidateFilter) -> int:
        clauses, params = ["tenant = %s"], [what.tenant]
        for column, value in (
            ("scope", what.scope),
            ("context_digest", what.context_digest),
            ("id", what.id),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        args: list[Any] = list(params)
        if what.created_before is not None:
            clauses.append("created_at < %s")
            args.append(what.created_before)

        async def q(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                "DELETE FROM gearshift_cache_entries WHERE " + " AND ".join(clauses), args
            )
            return int(cur.rowcount)

        return await self._with_conn(q)

    async def count(self, tenant: str | None, now: float) -> int:
        async def q(conn: AsyncConnection[Any]) -> int:
            sql = (
                "SELECT count(*) FROM gearshift_cache_entries "
                "WHERE (expires_at = 0 OR expires_at > %s)"
            )
            args: list[Any] = [now]
            if tenant:
                sql += " AND tenant = %s"
                args.append(tenant)
            cur = await conn.execute(sql, args)
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._with_conn(q)

    async def purge_expired(self, now: float) -> int:
        async def q(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                "DELETE FROM gearshift_cache_entries WHERE expires_at > 0 AND expires_at <= %s",
                (now,),
            )
            return int(cur.rowcount)

        return await self._with_conn(q)
