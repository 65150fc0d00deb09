"""Small documents and calls shared by the retriever tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gearshift.v1 import retriever_pb2, retriever_pb2_grpc

CACHE_DOC = """# Cache

The semantic cache answers repeated questions.

## Settings

Set max_false_hit_rate to bound the share of wrong cache hits the verifier may serve.
"""

GPU_DOC = """# Node maintenance

## Hardware

When nodes lose their GPU, cordon the machines and move workloads elsewhere.
"""

BILLING_DOC = """# Billing

## Exports

The kestrel job exports invoices to the finance team every night.
"""

POWER_DOC = """# Power

## Supplies

A dead power supply takes the server down; swap it and restart the host.
"""

DISK_DOC = """# Storage

## Disks

Replace failed disks within a day; the array rebuilds itself.
"""

DOCS = {"cache.md": CACHE_DOC, "gpu.md": GPU_DOC, "billing.md": BILLING_DOC}
HARDWARE_DOCS = {**DOCS, "power.md": POWER_DOC, "disk.md": DISK_DOC}
TIMEOUT = 120.0


async def ingest(
    stub: retriever_pb2_grpc.RetrieverServiceStub,
    tenant: str,
    source: str,
    docs: dict[str, str],
) -> retriever_pb2.IngestResponse:
    async def stream() -> AsyncIterator[retriever_pb2.IngestDocument]:
        for document_id, text in docs.items():
            yield retriever_pb2.IngestDocument(
                tenant=tenant, source=source, document_id=document_id, text=text
            )

    response: retriever_pb2.IngestResponse = await stub.Ingest(stream(), timeout=TIMEOUT)
    return response


async def search(
    stub: retriever_pb2_grpc.RetrieverServiceStub,
    tenant: str,
    source: str,
    query: str,
    mode: str = "hybrid",
    top_k: int = 5,
) -> retriever_pb2.SearchResponse:
    response: retriever_pb2.SearchResponse = await stub.Search(
        retriever_pb2.SearchRequest(
            tenant=tenant, source=source, query=query, mode=mode, top_k=top_k
        ),
        timeout=TIMEOUT,
    )
    return response


async def stats(
    stub: retriever_pb2_grpc.RetrieverServiceStub, tenant: str, source: str = ""
) -> retriever_pb2.RetrieverStatsResponse:
    response: retriever_pb2.RetrieverStatsResponse = await stub.Stats(
        retriever_pb2.RetrieverStatsRequest(tenant=tenant, source=source), timeout=TIMEOUT
    )
    return response
