"""Ingest, search, re-ingest, delete and stats against a real retriever, on both backends."""

from __future__ import annotations

import grpc
import pytest

from gearshift.v1 import retriever_pb2, retriever_pb2_grpc
from tests.retriever.helpers import (
    BILLING_DOC,
    CACHE_DOC,
    DOCS,
    GPU_DOC,
    HARDWARE_DOCS,
    ingest,
    search,
    stats,
)

Stub = retriever_pb2_grpc.RetrieverServiceStub


async def test_ingested_markdown_is_found_with_its_heading_path(stub: Stub, tenant: str) -> None:
    response = await ingest(stub, tenant, "runbooks", DOCS)
    assert [r.status for r in response.results] == ["created"] * 3
    assert all(r.chunks >= 1 for r in response.results)
    assert response.content_version

    found = await search(stub, tenant, "runbooks", "How do I bound wrong cache hits?")
    best = found.passages[0]
    assert best.document_id == "cache.md"
    assert best.document_title == "Cache"
    assert best.chunk_title == "Cache > Settings"
    assert "max_false_hit_rate" in best.text
    assert best.source == "runbooks"
    assert found.content_version == response.content_version


async def test_hybrid_surfaces_a_keyword_only_and_a_vector_only_match(
    stub: Stub, tenant: str
) -> None:
    await ingest(stub, tenant, "ops", HARDWARE_DOCS)
    # Only the billing chunk has the word "kestrel", and by meaning it is far from the
    # question; the GPU chunk means the question but shares none of its words.
    query = "graphics processor died kestrel"

    keyword = await search(stub, tenant, "ops", query, mode="keyword")
    assert [p.document_id for p in keyword.passages] == ["billing.md"]
    assert keyword.passages[0].vector_similarity == 0.0

    vector = await search(stub, tenant, "ops", query, mode="vector", top_k=2)
    assert vector.passages[0].document_id == "gpu.md"
    assert "billing.md" not in {p.document_id for p in vector.passages}
    assert vector.passages[0].vector_similarity > 0.2

    hybrid = await search(stub, tenant, "ops", query, mode="hybrid", top_k=2)
    assert {p.document_id for p in hybrid.passages} == {"billing.md", "gpu.md"}
    scores = [p.score for p in hybrid.passages]
    assert scores == sorted(scores, reverse=True)
    assert all(p.vector_similarity > 0 for p in hybrid.passages)


async def test_reingesting_an_unchanged_document_is_a_no_op(stub: Stub, tenant: str) -> None:
    first = await ingest(stub, tenant, "docs", {"cache.md": CACHE_DOC})
    before = await stats(stub, tenant, "docs")
    again = await ingest(stub, tenant, "docs", {"cache.md": CACHE_DOC})
    after = await stats(stub, tenant, "docs")
    assert again.results[0].status == "unchanged"
    assert again.results[0].chunks == first.results[0].chunks
    assert again.content_version == first.content_version
    assert after.sources[0].last_ingested_at == before.sources[0].last_ingested_at
    assert after.sources[0].chunks == before.sources[0].chunks


async def test_a_changed_document_replaces_its_chunks(stub: Stub, tenant: str) -> None:
    first = await ingest(stub, tenant, "docs", {"note.md": CACHE_DOC, "gpu.md": GPU_DOC})
    changed = "# Cache\n\n## Settings\n\nThe ttl_seconds setting expires entries.\n"
    second = await ingest(stub, tenant, "docs", {"note.md": changed})
    assert second.results[0].status == "updated"
    assert second.content_version != first.content_version

    old = await search(stub, tenant, "docs", "max_false_hit_rate", mode="keyword")
    assert old.passages == []
    new = await search(stub, tenant, "docs", "ttl_seconds", mode="keyword")
    assert [p.document_id for p in new.passages] == ["note.md"]
    counts = (await stats(stub, tenant, "docs")).sources[0]
    assert counts.documents == 2
    assert counts.chunks == second.results[0].chunks + first.results[1].chunks

    # Back to the first text: the same documents give the same version again.
    third = await ingest(stub, tenant, "docs", {"note.md": CACHE_DOC})
    assert third.content_version == first.content_version


async def test_delete_documents_then_the_whole_source(stub: Stub, tenant: str) -> None:
    created = await ingest(stub, tenant, "kb", DOCS)
    deleted = await stub.Delete(
        retriever_pb2.DeleteRequest(tenant=tenant, source="kb", document_ids=["billing.md"])
    )
    assert deleted.documents_deleted == 1
    assert deleted.chunks_deleted == created.results[2].chunks
    assert deleted.content_version not in ("", created.content_version)
    gone = await search(stub, tenant, "kb", "zqx4471", mode="keyword")
    assert gone.passages == []
    assert (await stats(stub, tenant, "kb")).sources[0].documents == 2

    whole = await stub.Delete(retriever_pb2.DeleteRequest(tenant=tenant, source="kb"))
    assert whole.documents_deleted == 2
    assert whole.content_version == ""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search(stub, tenant, "kb", "cache")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stats_lists_the_tenants_sources_by_name(stub: Stub, tenant: str) -> None:
    await ingest(stub, tenant, "zeta", {"gpu.md": GPU_DOC})
    await ingest(stub, tenant, "alpha", {"cache.md": CACHE_DOC, "billing.md": BILLING_DOC})
    listed = await stats(stub, tenant)
    assert [s.source for s in listed.sources] == ["alpha", "zeta"]
    assert [s.documents for s in listed.sources] == [2, 1]
    assert all(s.chunks >= s.documents and s.last_ingested_at > 0 for s in listed.sources)
    assert listed.backend in ("usearch+sqlite", "pgvector")
    other = await stats(stub, tenant + "-other")
    assert list(other.sources) == []
