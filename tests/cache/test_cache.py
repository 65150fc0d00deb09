"""One behaviour suite, run against both backends (usearch and a real pgvector)."""

from __future__ import annotations

import asyncio
import tempfile

import grpc
import pytest

from gearshift.embeddings import shared_embedder
from gearshift.runtime.errors import field_violations
from gearshift.v1 import cache_pb2, common_pb2
from tests.cache.conftest import RunningCache, settings_for, start_cache, stop_cache
from tests.cache.helpers import lookup_request, scope, store_request

HIT_EXACT = common_pb2.CACHE_OUTCOME_HIT_EXACT
HIT_SEMANTIC = common_pb2.CACHE_OUTCOME_HIT_SEMANTIC
MISS = common_pb2.CACHE_OUTCOME_MISS

# Pairs from qqp_pairs_dev.jsonl (held-out split).
PARAPHRASE = (
    "How can I improve my English speaking skills?",
    "How do I improve my English speaking skills?",
)
NEAR_MISS = (
    "What are some things you wish you knew when you started programming?",
    "What are some things you wish you knew when you started java programming?",
)


async def _store(cache: RunningCache, where: cache_pb2.CacheScope, text: str, answer: str) -> str:
    reply = await cache.stub.Store(store_request(where, text, answer))
    assert reply.stored, reply.reason
    return str(reply.id)


async def _outcome(cache: RunningCache, where: cache_pb2.CacheScope, text: str) -> int:
    reply = await cache.stub.Lookup(lookup_request(where, text))
    return int(reply.outcome)


async def test_exact_hit_on_normalised_text(cache: RunningCache, tenant: str) -> None:
    where = scope(tenant)
    entry_id = await _store(cache, where, "What is the capital of France?", "Paris.")
    reply = await cache.stub.Lookup(lookup_request(where, "  what is the capital of  FRANCE "))
    assert reply.outcome == HIT_EXACT
    assert reply.entry.id == entry_id
    assert reply.entry.answer == "Paris."
    assert reply.entry.usage.total_tokens == 42
    assert reply.entry.scope.tenant == tenant


async def test_paraphrase_hit(cache: RunningCache, tenant: str) -> None:
    where = scope(tenant)
    await _store(cache, where, PARAPHRASE[0], "Practise every day.")
    reply = await cache.stub.Lookup(lookup_request(where, PARAPHRASE[1]))
    assert reply.outcome == HIT_SEMANTIC
    assert reply.entry.answer == "Practise every day."
    assert reply.similarity > 0.8
    assert 0.0 < reply.confidence <= 1.0


async def test_near_miss_rejected(cache: RunningCache, tenant: str) -> None:
    where = scope(tenant)
    await _store(cache, where, NEAR_MISS[0], "Learn to read other people's code.")
    reply = await cache.stub.Lookup(lookup_request(where, NEAR_MISS[1]))
    assert reply.outcome == MISS
    assert reply.similarity > 0.6  # the index did find it; the verifier refused it


async def test_negation_not_served(cache: RunningCache, tenant: str) -> None:
    where = scope(tenant)
    await _store(cache, where, "How do I enable 2FA?", "Settings > Security > Enable 2FA.")
    assert await _outcome(cache, where, "How do I disable 2FA?") == MISS


# 97 words: longer than max_semantic_words (64).
LONG_CONTEXT = (
    "I moved to London for work last year and I use English every day in meetings, but I "
    "still freeze when I have to speak in front of people, I lose words, I translate in my "
    "head from my native language and my sentences come out slowly and with mistakes. I "
    "read a lot and my written English is fine, I watch series with subtitles and I have "
    "tried two apps, but none of this made speaking easier. My manager says my ideas are "
    "good but hard to follow. "
)


async def test_long_questions_hit_only_on_exact_repeats(cache: RunningCache, tenant: str) -> None:
    """Behind a long shared context the verifier cannot tell questions apart reliably."""
    where = scope(tenant)
    question = LONG_CONTEXT + PARAPHRASE[0]
    await _store(cache, where, question, "Speak every day, even alone.")
    assert await _outcome(cache, where, question.upper()) == HIT_EXACT
    # The verifier would accept this paraphrase (p ~0.93), but the question is too long.
    assert await _outcome(cache, where, LONG_CONTEXT + PARAPHRASE[1]) == MISS


async def test_max_semantic_words_zero_serves_exact_repeats_only() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = await start_cache(settings_for("usearch", tmp, "", max_semantic_words=0))
        try:
            where = scope("tenant-exact-only")
            await _store(cache, where, PARAPHRASE[0], "Practise every day.")
            assert await _outcome(cache, where, PARAPHRASE[0]) == HIT_EXACT
            assert await _outcome(cache, where, PARAPHRASE[1]) == MISS
        finally:
            await stop_cache(cache)


async def test_tenant_isolation(cache: RunningCache, tenant: str) -> None:
    other = tenant + "-other"
    await _store(cache, scope(tenant), "What is the capital of Italy?", "Rome.")
    assert await _outcome(cache, scope(other), "What is the capital of Italy?") == MISS
    assert await _outcome(cache, scope(other), "What's the capital city of Italy?") == MISS
    assert (await cache.stub.Stats(cache_pb2.StatsRequest(tenant=other))).entries == 0
    assert (await cache.stub.Stats(cache_pb2.StatsRequest(tenant=tenant))).entries == 1


async def test_scope_and_context_isolation(cache: RunningCache, tenant: str) -> None:
    text = "What is the boiling point of water?"
    await _store(cache, scope(tenant, "small", "sys-a"), text, "100 degrees Celsius.")
    assert await _outcome(cache, scope(tenant, "small", "sys-a"), text) == HIT_EXACT
    assert await _outcome(cache, scope(tenant, "large", "sys-a"), text) == MISS
    assert await _outcome(cache, scope(tenant, "small", "sys-b"), text) == MISS
    assert await _outcome(cache, scope(tenant, "small", ""), text) == MISS


async def test_ttl_expiry(cache: RunningCache, tenant: str) -> None:
    where = scope(tenant)
    reply = await cache.stub.Store(
        store_request(where, "What time is it in Tokyo?", "9 pm.", ttl=1)
    )
    assert reply.stored
    assert await _outcome(cache, where, "What time is it in Tokyo?") == HIT_EXACT
    await asyncio.sleep(1.5)
    assert await _outcome(cache, where, "What time is it in Tokyo?") == MISS
    assert (await cache.stub.Stats(cache_pb2.StatsRequest(tenant=tenant))).entries == 0


async def test_invalidate_by_id_scope_tenant_and_age(cache: RunningCache, tenant: str) -> None:
    a = scope(tenant, "small")
    b = scope(tenant, "large")
    first = await _store(cache, a, "Who wrote Hamlet?", "Shakespeare.")
    await _store(cache, a, "Who painted the Mona Lisa?", "Leonardo da Vinci.")
    await _store(cache, b, "Who wrote Hamlet?", "William Shakespeare.")

    removed = await cache.stub.Invalidate(cache_pb2.InvalidateRequest(scope=a, id=first))
    assert removed.removed == 1
    assert await _outcome(cache, a, "Who wrote Hamlet?") == MISS
    assert await _outcome(cache, b, "Who wrote Hamlet?") == HIT_EXACT

    removed = await cache.stub.Invalidate(
        cache_pb2.InvalidateRequest(scope=cache_pb2.CacheScope(tenant=tenant, scope="large"))
    )
    assert removed.removed == 1
    assert await _outcome(cache, b, "Who wrote Hamlet?") == MISS
    assert await _outcome(cache, a, "Who painted the Mona Lisa?") == HIT_EXACT

    await asyncio.sleep(1.2)
    await _store(cache, a, "Who discovered penicillin?", "Alexander Fleming.")
    removed = await cache.stub.Invalidate(
        cache_pb2.InvalidateRequest(
            scope=cache_pb2.CacheScope(tenant=tenant), older_than_seconds=1.0
        )
    )
    assert removed.removed == 1
    assert await _outcome(cache, a, "Who painted the Mona Lisa?") == MISS
    assert await _outcome(cache, a, "Who discovered penicillin?") == HIT_EXACT

    removed = await cache.stub.Invalidate(
        cache_pb2.InvalidateRequest(scope=cache_pb2.CacheScope(tenant=tenant))
    )
    assert removed.removed == 1
    assert (await cache.stub.Stats(cache_pb2.StatsRequest(tenant=tenant))).entries == 0


@pytest.mark.parametrize(
    ("finish", "answer", "reason"),
    [
        (common_pb2.FINISH_REASON_LENGTH, "Paris is the", "truncated"),
        (common_pb2.FINISH_REASON_ERROR, "Paris", "ERROR"),
        (common_pb2.FINISH_REASON_ABORT, "Par", "ABORT"),
        (common_pb2.FINISH_REASON_STOP, "   ", "empty"),
        (common_pb2.FINISH_REASON_STOP, "x" * 70_000, "oversize"),
    ],
)
async def test_store_refuses_bad_answers(
    cache: RunningCache, tenant: str, finish: int, answer: str, reason: str
) -> None:
    where = scope(tenant)
    reply = await cache.stub.Store(
        store_request(where, "What is the capital of France?", answer, finish=finish)  # type: ignore[arg-type]
    )
    assert not reply.stored
    assert reason in reply.reason
    assert await _outcome(cache, where, "What is the capital of France?") == MISS


async def test_missing_tenant_and_bad_embedding_are_invalid(cache: RunningCache) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cache.stub.Lookup(lookup_request(scope(""), "hello"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(err.value)] == ["scope.tenant"]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cache.stub.Store(store_request(scope(""), "hello", "hi"))
    assert [v.field for v in field_violations(err.value)] == ["scope.tenant"]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cache.stub.Lookup(
            cache_pb2.LookupRequest(scope=scope("t"), text="hello", embedding=[0.1] * 10)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(err.value)] == ["embedding"]


async def test_lookup_with_precomputed_embedding(cache: RunningCache, tenant: str) -> None:
    where = scope(tenant)
    await _store(cache, where, PARAPHRASE[0], "Practise every day.")
    vector = shared_embedder().embed([PARAPHRASE[1]])[0]
    reply = await cache.stub.Lookup(
        cache_pb2.LookupRequest(scope=where, text=PARAPHRASE[1], embedding=vector.tolist())
    )
    assert reply.outcome == HIT_SEMANTIC
    assert reply.entry.answer == "Practise every day."


async def test_stats_count_outcomes(cache: RunningCache, tenant: str) -> None:
    before = await cache.stub.Stats(cache_pb2.StatsRequest())
    where = scope(tenant)
    await _store(cache, where, "What is the speed of light?", "About 300,000 km/s.")
    await _outcome(cache, where, "What is the speed of light?")
    await _outcome(cache, where, "How tall is Mount Everest?")
    after = await cache.stub.Stats(cache_pb2.StatsRequest())
    assert after.backend == cache.backend
    assert after.exact_hits == before.exact_hits + 1
    assert after.misses == before.misses + 1


# Statements and instructions (not in statement_pairs.json): the cache serves their
# paraphrases and refuses near-duplicates with a real difference.
STATEMENT = (
    "The service listens on port 8080 for HTTP traffic.",
    "HTTP traffic is served on port 8080 by the service.",
)
INSTRUCTION = (
    "Restart the gateway after you rotate the certificates.",
    "After rotating the certificates, restart the gateway.",
)
REAL_DIFFERENCES = [
    ("Restart the gateway after you rotate the certificates.", "negation"),
    ("The proxy retries a failed upstream call up to three times.", "numbers"),
    ("Send the weekly report to the finance team on Monday.", "replaced"),
]
NEAR_DUPLICATES = {
    "Restart the gateway after you rotate the certificates.": (
        "Do not restart the gateway after you rotate the certificates."
    ),
    "The proxy retries a failed upstream call up to three times.": (
        "The proxy retries a failed upstream call up to five times."
    ),
    "Send the weekly report to the finance team on Monday.": (
        "Send the weekly report to the finance team on Friday."
    ),
}


@pytest.mark.parametrize("pair", [STATEMENT, INSTRUCTION], ids=["statement", "instruction"])
async def test_paraphrase_of_statement_or_instruction_hits(
    cache: RunningCache, tenant: str, pair: tuple[str, str]
) -> None:
    where = scope(tenant)
    entry_id = await _store(cache, where, pair[0], "Noted.")
    reply = await cache.stub.Lookup(lookup_request(where, pair[1]))
    assert reply.outcome == HIT_SEMANTIC, reply.reason
    assert reply.entry.id == entry_id
    assert reply.reason.startswith("statement: cosine")


@pytest.mark.parametrize(("stored", "kind"), REAL_DIFFERENCES, ids=[k for _, k in REAL_DIFFERENCES])
async def test_near_duplicate_with_a_real_difference_misses(
    cache: RunningCache, tenant: str, stored: str, kind: str
) -> None:
    where = scope(tenant)
    await _store(cache, where, stored, "Noted.")
    reply = await cache.stub.Lookup(lookup_request(where, NEAR_DUPLICATES[stored]))
    assert reply.outcome == MISS
    assert reply.similarity > 0.9  # close enough that cosine alone would have served it
    assert kind in reply.reason


async def test_nearest_entry_is_served_and_nearer_ones_passed_over_are_named(
    cache: RunningCache, tenant: str
) -> None:
    where = scope(tenant)
    question = "The proxy retries a failed upstream call up to five times."
    texts = [
        "The proxy retries a failed upstream call up to three times.",  # cosine 0.97
        "A failed upstream call is retried up to five times by the proxy.",  # 0.94
        "Up to five times, the proxy retries a failed upstream call.",  # 0.97
    ]
    cosines = shared_embedder().embed([question, *texts]) @ shared_embedder().embed([question])[0]
    assert cosines[1] > cosines[2]  # the wrong number is nearer than the passive paraphrase
    three = await _store(cache, where, texts[0], "3")
    passive = await _store(cache, where, texts[1], "5")
    reply = await cache.stub.Lookup(lookup_request(where, question))
    assert reply.outcome == HIT_SEMANTIC, reply.reason
    assert reply.entry.id == passive
    assert "passed over" in reply.reason and "different numbers (5 / 3)" in reply.reason
    # Two stored paraphrases of the question: the nearer one is served.
    moved = await _store(cache, where, texts[2], "5 again")
    reply = await cache.stub.Lookup(lookup_request(where, question))
    assert reply.outcome == HIT_SEMANTIC, reply.reason
    assert reply.entry.id == (moved if cosines[3] > cosines[2] else passive)
    assert reply.entry.id != three
