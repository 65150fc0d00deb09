"""The embedded backend keeps every acknowledged document across restarts and crashes."""

from __future__ import annotations

from pathlib import Path

import grpc

from gearshift.v1 import retriever_pb2_grpc
from tests.fixtures.retriever import RetrieverProcess
from tests.retriever.helpers import BILLING_DOC, DOCS, ingest, search, stats


async def test_sources_survive_a_clean_restart_and_a_kill(tmp_path: Path) -> None:
    retriever = RetrieverProcess(tmp_path)
    try:
        async with grpc.aio.insecure_channel(retriever.start()) as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            first = await ingest(stub, "t", "kb", DOCS)
        retriever.stop()  # SIGTERM: index snapshots are written

        async with grpc.aio.insecure_channel(retriever.start()) as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            again = await ingest(stub, "t", "kb", DOCS)
            assert {r.status for r in again.results} == {"unchanged"}
            assert again.content_version == first.content_version
            found = await search(stub, "t", "kb", "bound wrong cache hits", mode="vector")
            assert found.passages[0].document_id == "cache.md"
            changed = BILLING_DOC.replace("kestrel", "osprey")
            after_change = await ingest(stub, "t", "kb", {"billing.md": changed})
        retriever.stop(kill=True)  # SIGKILL: no snapshot; the index is rebuilt from SQLite

        async with grpc.aio.insecure_channel(retriever.start()) as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            (info,) = (await stats(stub, "t", "kb")).sources
            assert info.documents == 3
            assert info.content_version == after_change.content_version
            hits = await search(stub, "t", "kb", "osprey invoices", mode="vector", top_k=1)
            assert hits.passages[0].document_id == "billing.md"
            assert "osprey" in hits.passages[0].text
            assert (await search(stub, "t", "kb", "kestrel", mode="keyword")).passages == []
    finally:
        retriever.stop()
