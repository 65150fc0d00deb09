"""One real retriever per backend, shared by the tests (each test uses its own tenant)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from gearshift.v1 import retriever_pb2_grpc
from tests.fixtures.retriever import RetrieverProcess


@pytest.fixture(scope="session")
def pgvector_retriever(postgres_url: str) -> Iterator[str]:
    with (
        tempfile.TemporaryDirectory(prefix="gearshift-retriever-pg-") as tmp,
        RetrieverProcess(
            Path(tmp), "--backend", "pgvector", "--postgres-url", postgres_url
        ) as retriever,
    ):
        yield retriever.address


@pytest.fixture(params=["usearch", "pgvector"])
def retriever_address(request: pytest.FixtureRequest) -> str:
    """Address of a running retriever, once per backend."""
    if request.param == "usearch":
        return str(request.getfixturevalue("retriever_endpoint"))
    return str(request.getfixturevalue("pgvector_retriever"))


@pytest.fixture
async def stub(retriever_address: str) -> AsyncIterator[retriever_pb2_grpc.RetrieverServiceStub]:
    async with grpc.aio.insecure_channel(retriever_address) as channel:
        yield retriever_pb2_grpc.RetrieverServiceStub(channel)


@pytest.fixture
def tenant() -> str:
    """A tenant of the test's own: tests share servers but never see each other's sources."""
    return "t-" + uuid.uuid4().hex[:12]
