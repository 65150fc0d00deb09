"""Bad input gets a clear status, and one bad document never stops the others."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from gearshift.runtime.errors import field_violations
from gearshift.v1 import retriever_pb2, retriever_pb2_grpc
from tests.retriever.helpers import CACHE_DOC, GPU_DOC, TIMEOUT, ingest


@pytest.fixture
async def usearch_stub(
    retriever_endpoint: str,
) -> AsyncIterator[retriever_pb2_grpc.RetrieverServiceStub]:
    async with grpc.aio.insecure_channel(retriever_endpoint) as channel:
        yield retriever_pb2_grpc.RetrieverServiceStub(channel)


Stub = retriever_pb2_grpc.RetrieverServiceStub


async def _code(call: object) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return (
        info.value.code(),
        info.value.details() or "",
        [v.field for v in field_violations(info.value)],
    )


async def test_an_unknown_source_is_not_found(usearch_stub: Stub, tenant: str) -> None:
    for call in (
        usearch_stub.Search(
            retriever_pb2.SearchRequest(tenant=tenant, source="nope", query="q"), timeout=TIMEOUT
        ),
        usearch_stub.Delete(
            retriever_pb2.DeleteRequest(tenant=tenant, source="nope"), timeout=TIMEOUT
        ),
        usearch_stub.Stats(
            retriever_pb2.RetrieverStatsRequest(tenant=tenant, source="nope"), timeout=TIMEOUT
        ),
    ):
        code, details, _ = await _code(call)
        assert code == grpc.StatusCode.NOT_FOUND
        assert "'nope'" in details and "gearshift sources ingest" in details


async def test_bad_search_arguments_name_their_fields(usearch_stub: Stub, tenant: str) -> None:
    await ingest(usearch_stub, tenant, "docs", {"cache.md": CACHE_DOC})
    code, _, fields = await _code(
        usearch_stub.Search(
            retriever_pb2.SearchRequest(
                tenant=tenant, source="docs", query=" ", top_k=101, mode="fuzzy"
            ),
            timeout=TIMEOUT,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == ["query", "top_k", "mode"]
    code, _, fields = await _code(
        usearch_stub.Search(
            retriever_pb2.SearchRequest(tenant=tenant, source="Not_A_Label", query="q"),
            timeout=TIMEOUT,
        )
    )
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["source"])
    code, _, fields = await _code(
        usearch_stub.Search(
            retriever_pb2.SearchRequest(
                tenant=tenant, source="docs", query="q", embedding=[0.1] * 3
            ),
            timeout=TIMEOUT,
        )
    )
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["embedding"])


async def test_an_oversized_document_is_refused_naming_the_limit_while_others_ingest(
    usearch_stub: Stub, tenant: str
) -> None:
    huge = "# Huge\n\n" + "word " * 220_000  # 1.1 MB, over the default 1 MiB
    response = await ingest(
        usearch_stub,
        tenant,
        "docs",
        {"huge.md": huge, "gpu.md": GPU_DOC, "empty.md": "  \n", "cache.md": CACHE_DOC},
    )
    status = {r.document_id: (r.status, r.error) for r in response.results}
    assert status["huge.md"][0] == "failed"
    assert "max_document_bytes=1048576" in status["huge.md"][1]
    assert status["empty.md"] == ("failed", "document is empty")
    assert status["gpu.md"][0] == status["cache.md"][0] == "created"


async def test_one_stream_ingests_into_one_source(usearch_stub: Stub, tenant: str) -> None:
    async def mixed() -> AsyncIterator[retriever_pb2.IngestDocument]:
        yield retriever_pb2.IngestDocument(
            tenant=tenant, source="one", document_id="a.md", text=GPU_DOC
        )
        yield retriever_pb2.IngestDocument(
            tenant=tenant, source="two", document_id="b.md", text=GPU_DOC
        )

    code, details, fields = await _code(usearch_stub.Ingest(mixed(), timeout=TIMEOUT))
    assert "one stream ingests into one source" in details
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == ["documents[1].source"]

    async def empty() -> AsyncIterator[retriever_pb2.IngestDocument]:
        return
        yield  # pragma: no cover

    code, _, fields = await _code(usearch_stub.Ingest(empty(), timeout=TIMEOUT))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["documents"])
