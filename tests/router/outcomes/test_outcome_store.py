"""The outcome stores (SQLite file and real PostgreSQL) keep the same promises.

Decisions are keyed per tenant, outcomes once per source, everything survives a reopen
(a router restart), and retention deletes only what has outlived its window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from gearshift.router.outcomes.feedback import OutcomeService
from gearshift.router.outcomes.recorder import DecisionRecorder
from gearshift.router.outcomes.records import SOURCE_JUDGE, SOURCE_USER, Decision, Outcome
from gearshift.router.outcomes.store import OutcomeStore, open_store
from gearshift.runtime.errors import GearshiftError
from gearshift.v1 import common_pb2, router_pb2


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "outcomes")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_target: str) -> AsyncIterator[OutcomeStore]:
    opened = open_store(store_target)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def decision(tenant: str = "tenant-a", created_at: float | None = None) -> Decision:
    vector = np.arange(384, dtype=np.float32) / 384.0
    return Decision(
        tenant=tenant,
        response_id=uuid.uuid4().hex,
        prompt="What is the capital of France?",
        prompt_digest="d" * 64,
        embedding=vector.astype("<f4").tobytes(),
        difficulty=0.25,
        threshold=0.5,
        tier="slm",
        route="local-slm",
        model="smollm2",
        created_at=time.time() if created_at is None else created_at,
    )


async def test_decisions_and_outcomes_survive_a_reopen(store_target: str) -> None:
    d = decision()
    first = open_store(store_target)
    await first.open()
    await first.add_decisions([d])
    assert await first.add_outcome(Outcome(d.tenant, d.response_id, SOURCE_USER, 0.0, True))
    await first.close()
    reopened = open_store(store_target)
    await reopened.open()
    try:
        found = await reopened.get_decision(d.tenant, d.response_id)
        assert found == d
        assert np.array_equal(found.embedding_vector(), d.embedding_vector())
        rows = [r for r in await reopened.labelled() if r.decision.response_id == d.response_id]
        assert len(rows) == 1
        assert rows[0].outcome.score == 0.0 and rows[0].outcome.other_tier_better
    finally:
        await reopened.close()


async def test_ids_are_per_tenant_and_outcomes_once_per_source(store: OutcomeStore) -> None:
    d = decision("tenant-a")
    await store.add_decisions([d, d])  # a repeated write keeps the first row
    assert await store.get_decision("tenant-b", d.response_id) is None
    assert await store.add_outcome(Outcome(d.tenant, d.response_id, SOURCE_USER, 1.0))
    assert not await store.add_outcome(Outcome(d.tenant, d.response_id, SOURCE_USER, 0.0))
    assert await store.add_outcome(Outcome(d.tenant, d.response_id, SOURCE_JUDGE, 0.5))
    rows = [r for r in await store.labelled() if r.decision.response_id == d.response_id]
    assert sorted((r.outcome.source, r.outcome.score) for r in rows) == [
        (SOURCE_JUDGE, 0.5),
        (SOURCE_USER, 1.0),
    ]


async def test_retention_deletes_only_expired_rows(store: OutcomeStore) -> None:
    now = time.time()
    old_unrated, old_rated, fresh = (
        decision(created_at=now - 10_000),
        decision(created_at=now - 10_000),
        decision(),
    )
    await store.add_decisions([old_unrated, old_rated, fresh])
    await store.add_outcome(Outcome(old_rated.tenant, old_rated.response_id, SOURCE_USER, 1.0))
    await store.purge(unlabelled_before=now - 1000, labelled_before=0.0)
    assert await store.get_decision(old_unrated.tenant, old_unrated.response_id) is None
    assert await store.get_decision(old_rated.tenant, old_rated.response_id) is not None
    assert await store.get_decision(fresh.tenant, fresh.response_id) is not None
    await store.purge(unlabelled_before=now - 1000, labelled_before=now - 1000)
    assert await store.get_decision(old_rated.tenant, old_rated.response_id) is None


async def test_feedback_rules(store: OutcomeStore) -> None:
    recorder = DecisionRecorder(store, flush_interval_s=60.0)
    service = OutcomeService(store, recorder)
    recorder.record(
        tenant="tenant-a",
        response_id="r1",
        question="hi",
        embedding=[0.0] * 384,
        difficulty=0.1,
        threshold=0.5,
        tier="llm",
        route="local-llm",
        model="big",
    )
    # Rated before the background flush: feedback flushes the queue first.
    stored = await service.feedback(
        "tenant-a", router_pb2.FeedbackRequest(response_id="chatcmpl-r1", good=False)
    )
    assert (stored.score, stored.tier, stored.route) == (0.0, common_pb2.TIER_LLM, "local-llm")
    cases = [
        ("tenant-a", router_pb2.FeedbackRequest(response_id="r1", score=1.0), "ALREADY_EXISTS"),
        ("tenant-b", router_pb2.FeedbackRequest(response_id="r1", score=1.0), "NOT_FOUND"),
        ("tenant-a", router_pb2.FeedbackRequest(response_id="nope", score=1.0), "NOT_FOUND"),
        ("tenant-a", router_pb2.FeedbackRequest(response_id="r1", score=1.5), "INVALID_ARGUMENT"),
        ("tenant-a", router_pb2.FeedbackRequest(response_id="r1"), "INVALID_ARGUMENT"),
    ]
    for tenant, request, code in cases:
        with pytest.raises(GearshiftError) as caught:
            await service.feedback(tenant, request)
        assert caught.value.code == getattr(grpc.StatusCode, code), (request, caught.value)


async def test_feedback_waits_for_a_batch_being_written(store: OutcomeStore) -> None:
    """The answer's decision may be in a batch another task is writing right now."""
    recorder = DecisionRecorder(store, flush_interval_s=60.0)
    service = OutcomeService(store, recorder)
    for i in range(200):
        recorder.record(
            tenant="tenant-a",
            response_id=f"batch-{i}",
            question="hi",
            embedding=[0.0] * 384,
            difficulty=0.1,
            threshold=0.5,
            tier="slm",
            route="local-slm",
            model="small",
        )
    writing = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0)  # the batch has left the queue; its write is in progress
    assert recorder.pending == 0 and not writing.done()
    found = await service.decision("tenant-a", "batch-199")
    assert found.response_id == "batch-199"
    await writing


# The decisions table as the first release created it (before prompt features).
OLD_DECISIONS_TABLE = """CREATE TABLE {name} (
    tenant TEXT NOT NULL, response_id TEXT NOT NULL, created_at {real} NOT NULL,
    prompt TEXT NOT NULL, prompt_digest TEXT NOT NULL, embedding {blob} NOT NULL,
    difficulty {real} NOT NULL, threshold {real} NOT NULL, tier TEXT NOT NULL,
    route TEXT NOT NULL, model TEXT NOT NULL, PRIMARY KEY (tenant, response_id))"""
OLD_ROW = ("tenant-a", "old-1", 1.0, "", "e" * 64, b"\x00" * 1536, 0.2, 0.5, "slm", "r", "m")


def old_store(kind: str, tmp_path: Path, postgres_url: str) -> str:
    """A store with one digest-only decision, written by a router before this change."""
    if kind == "sqlite":
        import sqlite3

        path = tmp_path / "outcomes" / "outcomes.sqlite3"
        path.parent.mkdir()
        with sqlite3.connect(path) as db:
            db.execute(OLD_DECISIONS_TABLE.format(name="decisions", real="REAL", blob="BLOB"))
            db.execute(f"INSERT INTO decisions VALUES ({', '.join('?' * 11)})", OLD_ROW)
        return str(path.parent)
    import psycopg

    database = f"migration_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    head, _, query = postgres_url.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/{database}" + (f"?{query}" if query else "")
    with psycopg.connect(url) as db:
        table = OLD_DECISIONS_TABLE.format(
            name="gearshift_decisions", real="DOUBLE PRECISION", blob="BYTEA"
        )
        db.execute(table)
        db.execute(f"INSERT INTO gearshift_decisions VALUES ({', '.join(['%s'] * 11)})", OLD_ROW)
    return url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_store_from_an_older_router_gains_the_features_columns_and_keeps_its_rows(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url") if kind == "postgres" else ""
    store = open_store(old_store(kind, tmp_path, url))
    await store.open()
    try:
        old = await store.get_decision("tenant-a", "old-1")
        assert old is not None and old.prompt_digest == "e" * 64
        assert (old.features, old.features_version) == (b"", "")
        new = dataclasses.replace(
            decision(), prompt="", features=b"\x01\x02\x03\x04", features_version="1:abc"
        )
        await store.add_decisions([new])
        assert await store.get_decision(new.tenant, new.response_id) == new
    finally:
        await store.close()
