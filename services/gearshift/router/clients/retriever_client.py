"""The router's client of RetrieverService: one channel per retriever endpoint.

Every search carries the router's deadline (`source_timeout_s`, cut to the request's own
remaining time): a slow or dead retriever costs at most that long, after which the
planner skips the source with the reason (or, for a pinned source, answers UNAVAILABLE).
A retriever that checks keys gets the router's `retriever_api_key` as a bearer token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gearshift.router.table.backends import CHANNEL_OPTIONS
from gearshift.router.table.routing_table import Source
from gearshift.runtime.api_keys import bearer_metadata
from gearshift.runtime.telemetry import insecure_channel
from gearshift.runtime.trace_context import outgoing_metadata
from gearshift.v1 import retriever_pb2, retriever_pb2_grpc


class RetrieverClient:
    """Searches data sources, creating a traced channel per endpoint on first use."""

    def __init__(self, timeout_s: float = 2.0, api_key: str = "") -> None:
        self.timeout_s = timeout_s
        self.metadata = bearer_metadata(api_key)
        self._stubs: dict[str, tuple[object, retriever_pb2_grpc.RetrieverServiceAsyncStub]] = {}

    def _stub(self, endpoint: str) -> retriever_pb2_grpc.RetrieverServiceAsyncStub:
        entry = self._stubs.get(endpoint)
        if entry is None:
            channel = insecure_channel(endpoint, **CHANNEL_OPTIONS)
            entry = (channel, retriever_pb2_grpc.RetrieverServiceStub(channel))
            self._stubs[endpoint] = entry
        return entry[1]

    async def search(
        self,
        source: Source,
        query: str,
        embedding: Sequence[float],
        time_remaining: float,
    ) -> retriever_pb2.SearchResponse:
        """The source's top passages; raises grpc.aio.AioRpcError on failure or timeout."""
        request = retriever_pb2.SearchRequest(
            tenant=source.tenant,
            source=source.name,
            query=query,
            embedding=embedding,
            top_k=source.top_k,
            mode=source.mode,
        )
        timeout = max(0.001, min(self.timeout_s, time_remaining))
        return await self._stub(source.endpoint).Search(
            request, timeout=timeout, metadata=self.metadata + (outgoing_metadata() or ())
        )

    async def close(self) -> None:
        entries, self._stubs = list(self._stubs.values()), {}
        await asyncio.gather(
            *(ch.close(None) for ch, _ in entries),  # type: ignore[attr-defined]
            return_exceptions=True,
        )
