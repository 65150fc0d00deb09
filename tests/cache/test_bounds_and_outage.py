"""Size bound with eviction (both backends) and fail-soft behaviour when PostgreSQL is down."""

from __future__ import annotations

import tempfile
import time
import uuid

import psycopg
import pytest

from gearshift.v1 import cache_pb2, common_pb2
from tests.cache.conftest import settings_for, start_cache, stop_cache
from tests.cache.helpers import lookup_request, scope, store_request


def _fresh_database(postgres_url: str) -> str:
    """A new empty database on the session server (the eviction bound is table-wide)."""
    name = "evict_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.replace("/postgres?", f"/{name}?")


async def test_size_bound_evicts_oldest(backend_name: str, request: pytest.FixtureRequest) -> None:
    url = ""
    if backend_name == "pgvector":
        url = _fresh_database(request.getfixturevalue("postgres_url"))
    with tempfile.TemporaryDirectory() as tmp:
        cache = await start_cache(settings_for(backend_name, tmp, url, max_entries=3))
        try:
            where = scope("tenant-evict")
            questions = [f"What is {n} squared?" for n in (3, 4, 5, 6, 7)]
            for q in questions:
                assert (await cache.stub.Store(store_request(where, q, "a number"))).stored
            stats = await cache.stub.Stats(cache_pb2.StatsRequest())
            assert stats.entries == 3
            assert stats.evictions == 2
            first = await cache.stub.Lookup(lookup_request(where, questions[0]))
            last = await cache.stub.Lookup(lookup_request(where, questions[-1]))
            assert first.outcome != common_pb2.CACHE_OUTCOME_HIT_EXACT
            assert last.outcome == common_pb2.CACHE_OUTCOME_HIT_EXACT
        finally:
            await stop_cache(cache)


async def test_postgres_down_gives_misses_not_errors() -> None:
    """A dead database: lookups are ERROR misses, stores are refused, nothing raises."""
    dead = "postgresql://postgres@127.0.0.1:1/postgres"
    with tempfile.TemporaryDirectory() as tmp:
        cache = await start_cache(settings_for("pgvector", tmp, dead, db_timeout_s=0.5))
        try:
            where = scope("tenant-outage")
            started = time.monotonic()
            reply = await cache.stub.Lookup(lookup_request(where, "Is anyone there?"))
            assert reply.outcome == common_pb2.CACHE_OUTCOME_ERROR
            assert not reply.HasField("entry")
            stored = await cache.stub.Store(store_request(where, "Is anyone there?", "Yes."))
            assert not stored.stored
            assert "unavailable" in stored.reason
            stats = await cache.stub.Stats(cache_pb2.StatsRequest())
            assert stats.backend_errors >= 2
            assert stats.misses >= 1
            assert time.monotonic() - started < 30  # bounded by timeouts, not hanging
        finally:
            await stop_cache(cache)


async def test_postgres_stopped_mid_run_gives_misses() -> None:
    """A database that worked and then stops: the next lookup is a fast ERROR miss."""
    import pgserver

    with tempfile.TemporaryDirectory() as tmp:
        server = pgserver.get_server(f"{tmp}/pg", cleanup_mode="stop")
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        cache = await start_cache(settings_for("pgvector", tmp, server.get_uri(), db_timeout_s=0.5))
        try:
            where = scope("tenant-stop")
            assert (await cache.stub.Store(store_request(where, "Who is there?", "Me."))).stored
            hit = await cache.stub.Lookup(lookup_request(where, "Who is there?"))
            assert hit.outcome == common_pb2.CACHE_OUTCOME_HIT_EXACT
            server.cleanup()
            reply = await cache.stub.Lookup(lookup_request(where, "Who is there?"))
            assert reply.outcome == common_pb2.CACHE_OUTCOME_ERROR
        finally:
            await stop_cache(cache)
