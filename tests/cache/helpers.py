"""Small request builders shared by the cache tests."""

from __future__ import annotations

import time
import uuid

import numpy as np
import numpy.typing as npt

from gearshift.cache.entry import Entry
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


def backend_entry(exact_key: str, vector: npt.NDArray[np.float32], scope_key: str = "s1") -> Entry:
    """An entry for backend-level tests, which bypass the service's key derivation."""
    return Entry(
        id=uuid.uuid4().hex,
        tenant="t",
        scope="smollm2",
        context_digest="",
        scope_key=scope_key,
        exact_key=exact_key,
        question=f"question {exact_key}",
        answer=f"answer {exact_key}",
        model="smollm2-135m-instruct",
        prompt_tokens=1,
        completion_tokens=1,
        total_tokens=2,
        cost_usd=0.0,
        created_at=time.time(),
        expires_at=0.0,
        vector=vector,
    )
