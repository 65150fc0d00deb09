"""A small scope in a table dominated by another scope still finds its entries (pgvector).

pgvector 0.6 filters HNSW results after the index scan. When the planner believes a
scope is large (statistics lag behind evictions, purges and new tenants) it takes the
index for it, and the nearest rows may all belong to someone else.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from gearshift.cache.backends.pgvector_backend import PgvectorBackend
from gearshift.embeddings import DIM
from tests.cache.helpers import backend_entry


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def fresh_database(postgres_url: str) -> str:
    """A database of this test's own, so its statistics are exactly what it makes them."""
    name = "small_scope_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return make_conninfo(postgres_url, dbname=name)


def _sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        for statement in statements:
            conn.execute(statement)


async def test_small_scope_is_found_beside_a_large_one(fresh_database: str) -> None:
    backend = PgvectorBackend(fresh_database, timeout_s=60, ef_search=10)
    await backend.open()
    try:
        rng = np.random.default_rng(0)
        query = _unit(rng.normal(size=DIM))
        # The crowd sits closer to the query than the small scope's own two entries.
        crowd = _unit(query + 0.04 * rng.normal(size=(4000, DIM)))
        own = _unit(query + 0.08 * rng.normal(size=(2, DIM)))
        # Stale statistics, made on purpose: analysed while every row was in "small",
        # then the crowd moves to "big". Bulk load first and index after, for speed.
        _sql(fresh_database, "DROP INDEX gearshift_cache_hnsw")
        await backend.put_many(
            [backend_entry(f"small-{i}", v, "small") for i, v in enumerate(own)]
            + [backend_entry(f"crowd-{i}", v, "small") for i, v in enumerate(crowd)],
            timeout_s=120,
        )
        _sql(
            fresh_database,
            "ALTER TABLE gearshift_cache_entries SET (autovacuum_enabled = false)",
            "ANALYZE gearshift_cache_entries",
            "UPDATE gearshift_cache_entries SET scope_key = 'big' "
            "WHERE exact_key NOT IN ('small-0', 'small-1')",
            "CREATE INDEX gearshift_cache_hnsw ON gearshift_cache_entries "
            "USING hnsw (embedding vector_cosine_ops)",
        )
        found = await backend.search("small", query, 4, time.time())
        assert sorted(e.exact_key for e, _ in found) == ["small-0", "small-1"]
        # Similarities come back in descending order, as from the index path.
        sims = [s for _, s in found]
        assert sims == sorted(sims, reverse=True)
        # The large scope fills k.
        assert len(await backend.search("big", query, 4, time.time())) == 4
    finally:
        await backend.close()
