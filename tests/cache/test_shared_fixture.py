"""The `cache_server` fixture other test directories (the router's) reuse."""

from __future__ import annotations

import grpc

from gearshift.v1 import cache_pb2_grpc, common_pb2
from tests.cache.helpers import lookup_request, scope, store_request
from tests.fixtures.cache import CacheServer


async def test_cache_server_fixture_serves(cache_server: CacheServer) -> None:
    async with grpc.aio.insecure_channel(cache_server.address) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        where = scope("tenant-fixture")
        assert (await stub.Store(store_request(where, "Is the sky blue?", "Yes."))).stored
        reply = await stub.Lookup(lookup_request(where, "is the sky blue"))
        assert reply.outcome == common_pb2.CACHE_OUTCOME_HIT_EXACT
