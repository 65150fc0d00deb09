"""A fail-soft client of the semantic cache.

The cache is an optimisation, never a dependency: a lookup that is slow (over a short
deadline), failing or unconfigured is a miss, and stores run in the background so the
answer is never delayed by them. Stores are tracked so shutdown can wait for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from gearshift.runtime.telemetry import insecure_channel
from gearshift.runtime.trace_context import outgoing_metadata
from gearshift.v1 import cache_pb2, cache_pb2_grpc, common_pb2

log = logging.getLogger(__name__)


class CacheClient:
    """Lookup with a short deadline; background stores."""

    def __init__(
        self, address: str, lookup_timeout_s: float = 0.25, store_timeout_s: float = 2.0
    ) -> None:
        self.address = address
        self.lookup_timeout_s = lookup_timeout_s
        self.store_timeout_s = store_timeout_s
        self._channel = insecure_channel(
            address,
            **{"grpc.initial_reconnect_backoff_ms": 200, "grpc.max_reconnect_backoff_ms": 2_000},
        )
        self._stub: cache_pb2_grpc.CacheServiceAsyncStub = cache_pb2_grpc.CacheServiceStub(
            self._channel
        )
        self._stores: set[asyncio.Task[None]] = set()
        self.lookup_errors = 0
        self.store_errors = 0

    async def lookup(
        self, scope: cache_pb2.CacheScope, text: str, embedding: Sequence[float]
    ) -> cache_pb2.LookupResponse:
        """The cache's answer, or a response with outcome ERROR when it failed or was slow."""
        try:
            response: cache_pb2.LookupResponse = await self._stub.Lookup(
                cache_pb2.LookupRequest(scope=scope, text=text, embedding=embedding),
                timeout=self.lookup_timeout_s,
                metadata=outgoing_metadata(),
            )
            return response
        except grpc.aio.AioRpcError as exc:
            self.lookup_errors += 1
            log.warning("cache lookup failed soft: %s", exc.code().name)
            return cache_pb2.LookupResponse(outcome=common_pb2.CACHE_OUTCOME_ERROR)

    def store_in_background(self, request: cache_pb2.StoreRequest) -> None:
        """Stores without making anyone wait; failures are logged, never raised."""
        task = asyncio.create_task(self._store(request))
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)

    async def _store(self, request: cache_pb2.StoreRequest) -> None:
        try:
            response = await self._stub.Store(
                request, timeout=self.store_timeout_s, metadata=outgoing_metadata()
            )
            if not response.stored:
                log.info("cache refused the answer: %s", response.reason)
        except grpc.aio.AioRpcError as exc:
            self.store_errors += 1
            log.warning("cache store failed: %s", exc.code().name)

    async def drain(self) -> None:
        """Waits for background stores (used at shutdown and by tests)."""
        while self._stores:
            await asyncio.gather(*list(self._stores), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self._channel.close(None)
