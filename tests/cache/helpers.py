"""Small request builders shared by the cache tests."""

from __future__ import annotations

from gearshift.v1 import cache_pb2, common_pb2


def scope(tenant: str, name: str = "smollm2", digest: str = "") -> cache_pb2.CacheScope:
    return cache_pb2.CacheScope(tenant=tenant, scope=name, context_digest=digest)


def store_request(
    where: cache_pb2.CacheScope,
    text: str,
    answer: str,
    finish: common_pb2.FinishReason = common_pb2.FINISH_REASON_STOP,
    ttl: int = 0,
) -> cache_pb2.StoreRequest:
    return cache_pb2.StoreRequest(
        scope=where,
        text=text,
        answer=answer,
        model="smollm2-135m-instruct",
        finish_reason=finish,
        usage=common_pb2.Usage(prompt_tokens=12, completion_tokens=30, total_tokens=42),
        ttl_seconds=ttl,
    )


def lookup_request(where: cache_pb2.CacheScope, text: str) -> cache_pb2.LookupRequest:
    return cache_pb2.LookupRequest(scope=where, text=text)
