"""A retriever with a keys file: every call needs a known key, and a tenant's key sees
only its tenant. The router's retriever client and the operator send their service key.

One real `gearshift serve retriever --api-keys-file ...` process serves the module.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from gearshift.router.clients.retriever_client import RetrieverClient
from gearshift.router.table.routing_table import Source
from gearshift.v1 import retriever_pb2, retriever_pb2_grpc
from gearshift_operator.datasources import observe
from gearshift_operator.settings import Settings as OperatorSettings
from tests.fixtures.retriever import RetrieverProcess
from tests.retriever.helpers import CACHE_DOC

SERVICE_KEY = "svc-key-7f3a"
TEAM_KEY = "team-a-key-91c2"


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def keyed_retriever() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="gearshift-retriever-keys-") as tmp:
        keys = Path(tmp) / "api-keys.yaml"
        keys.write_text(yaml.safe_dump({SERVICE_KEY: "*", TEAM_KEY: "team-a"}))
        with RetrieverProcess(Path(tmp), "--api-keys-file", str(keys)) as retriever:
            yield retriever.address


@pytest.fixture
async def keyed_stub(
    keyed_retriever: str,
) -> AsyncIterator[retriever_pb2_grpc.RetrieverServiceStub]:
    async with grpc.aio.insecure_channel(keyed_retriever) as channel:
        yield retriever_pb2_grpc.RetrieverServiceStub(channel)


async def _ingest(
    stub: retriever_pb2_grpc.RetrieverServiceStub, key: str | None, tenant: str = ""
) -> retriever_pb2.IngestResponse:
    async def documents() -> AsyncIterator[retriever_pb2.IngestDocument]:
        yield retriever_pb2.IngestDocument(
            tenant=tenant, source="handbook", document_id="cache.md", text=CACHE_DOC
        )

    metadata = _auth(key) if key else ()
    response: retriever_pb2.IngestResponse = await stub.Ingest(
        documents(), metadata=metadata, timeout=60
    )
    return response


async def test_calls_without_a_known_key_are_unauthenticated(
    keyed_stub: retriever_pb2_grpc.RetrieverServiceStub,
) -> None:
    search = retriever_pb2.SearchRequest(source="handbook", query="false-hit rate")
    for metadata, detail in [((), "missing API key"), (_auth("wrong"), "unknown API key")]:
        calls = [
            keyed_stub.Search(search, metadata=metadata, timeout=10),
            keyed_stub.Stats(retriever_pb2.RetrieverStatsRequest(), metadata=metadata, timeout=10),
            keyed_stub.Delete(
                retriever_pb2.DeleteRequest(source="handbook"), metadata=metadata, timeout=10
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert detail in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _ingest(keyed_stub, None if not metadata else "wrong")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Nothing was written by the refused ingests.
    stats = await keyed_stub.Stats(
        retriever_pb2.RetrieverStatsRequest(tenant="default"), metadata=_auth(SERVICE_KEY)
    )
    assert [s.source for s in stats.sources] == []


async def test_a_tenant_key_is_bound_to_its_tenant(
    keyed_stub: retriever_pb2_grpc.RetrieverServiceStub,
) -> None:
    ingested = await _ingest(keyed_stub, TEAM_KEY)  # tenant left empty: the key's tenant
    assert [r.status for r in ingested.results] in (["created"], ["unchanged"])
    found = await keyed_stub.Search(
        retriever_pb2.SearchRequest(source="handbook", query="max_false_hit_rate"),
        metadata=_auth(TEAM_KEY),
        timeout=10,
    )
    assert [p.document_id for p in found.passages][:1] == ["cache.md"]
    # The service key reaches the team's source by naming the tenant.
    stats = await keyed_stub.Stats(
        retriever_pb2.RetrieverStatsRequest(tenant="team-a", source="handbook"),
        metadata=_auth(SERVICE_KEY),
        timeout=10,
    )
    assert stats.sources[0].documents == 1
    # The team's key cannot name another tenant.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await keyed_stub.Stats(
            retriever_pb2.RetrieverStatsRequest(tenant="team-b"),
            metadata=_auth(TEAM_KEY),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "team-a" in (err.value.details() or "")


async def test_router_client_and_operator_send_their_service_key(
    keyed_stub: retriever_pb2_grpc.RetrieverServiceStub, keyed_retriever: str
) -> None:
    await _ingest(keyed_stub, SERVICE_KEY, tenant="ops")
    source = Source(name="handbook", description="d", endpoint=keyed_retriever, tenant="ops")
    keyed = RetrieverClient(timeout_s=10, api_key=SERVICE_KEY)
    keyless = RetrieverClient(timeout_s=10)
    try:
        found = await keyed.search(source, "max_false_hit_rate", [], 10)
        assert found.passages and found.passages[0].document_id == "cache.md"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await keyless.search(source, "max_false_hit_rate", [], 10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await keyed.close()
        await keyless.close()

    spec = {"description": "d", "retriever": {"endpoint": keyed_retriever, "tenant": "ops"}}
    fields, ready = await observe(
        "handbook", spec, 1, OperatorSettings(retriever_api_key=SERVICE_KEY)
    )
    assert ready["status"] == "True" and fields["documents"] == 1
    _, refused = await observe("handbook", spec, 1, OperatorSettings())
    assert refused["status"] == "False" and "UNAUTHENTICATED" in refused["message"]
