"""The CacheService handlers: validation, exact path, vector search, verification.

A lookup tries the exact-match path (normalised text in the same scope) first, so
repeated questions cost one indexed read and no embedding. Otherwise it embeds
(or takes the caller's embedding), asks the backend for the nearest entries of the
same scope and lets `HitDecider` pick (nearest first; see `gearshift.cache.decision`).
Questions longer than `max_semantic_words` take the exact path only: the verifier was
never calibrated on them. Any backend
failure is a miss with outcome ERROR: the cache never fails a caller because its
storage is down.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from gearshift.cache import metrics
from gearshift.cache.backends import Backend, BackendError
from gearshift.cache.decision import Candidate, HitDecider
from gearshift.cache.entry import Entry, InvalidateFilter
from gearshift.cache.keys import exact_key, scope_key
from gearshift.cache.settings import Settings
from gearshift.cache.verifier import Verifier
from gearshift.embeddings import MicroBatcher
from gearshift.embeddings.validation import caller_embedding
from gearshift.runtime.errors import FieldViolation, InvalidArgument, Unavailable, grpc_errors
from gearshift.v1 import cache_pb2, cache_pb2_grpc, common_pb2

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class Counters:
    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    backend_errors: int = 0
    evictions: int = 0


def _require_tenant(scope: cache_pb2.CacheScope) -> None:
    if not scope.tenant.strip():
        raise InvalidArgument([FieldViolation("scope.tenant", "required: the tenant id")])


def _require_text(text: str) -> None:
    if not text.strip():
        raise InvalidArgument([FieldViolation("text", "required: the question text")])


_FINISH_REFUSALS = {
    common_pb2.FINISH_REASON_LENGTH: "truncated answer (finish reason LENGTH)",
    common_pb2.FINISH_REASON_ABORT: "aborted generation (finish reason ABORT)",
    common_pb2.FINISH_REASON_ERROR: "failed generation (finish reason ERROR)",
    common_pb2.FINISH_REASON_CONTENT_FILTER: "filtered answer (finish reason CONTENT_FILTER)",
    common_pb2.FINISH_REASON_UNSPECIFIED: "unfinished answer (finish reason UNSPECIFIED)",
}


class CacheServicer(cache_pb2_grpc.CacheServiceServicer):
    """Implements the CacheService contract over one backend."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        batcher: MicroBatcher | None,
        verifier: Verifier,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.batcher = batcher
        self.verifier = verifier
        self.decider = HitDecider(verifier, settings.max_false_hit_rate, settings.min_similarity)
        self.counters = Counters()
        self._backend_down_until = 0.0

    async def _embed(self, text: str) -> npt.NDArray[np.float32]:
        if self.batcher is None:
            raise Unavailable("cache is warming up")
        return await self.batcher.embed_vector(text)

    # -- fail soft ----------------------------------------------------------------

    def _backend_down(self) -> bool:
        return time.monotonic() < self._backend_down_until

    def _record_backend_error(self, op: str, exc: BaseException) -> None:
        self.counters.backend_errors += 1
        metrics.BACKEND_ERRORS.labels(self.backend.name, op).inc()
        self._backend_down_until = time.monotonic() + self.settings.backend_retry_s
        log.warning("cache backend %s failed on %s: %s", self.backend.name, op, exc)

    # -- Lookup -------------------------------------------------------------------

    @grpc_errors
    async def Lookup(
        self, request: cache_pb2.LookupRequest, context: Context
    ) -> cache_pb2.LookupResponse:
        _require_tenant(request.scope)
        _require_text(request.text)
        given = caller_embedding(request.embedding)
        started = time.perf_counter()
        try:
            response = await self._lookup(request, given)
        finally:
            metrics.LOOKUP_SECONDS.labels(self.backend.name).observe(time.perf_counter() - started)
        outcome = response.outcome
        if outcome == common_pb2.CACHE_OUTCOME_HIT_EXACT:
            self.counters.exact_hits += 1
            metrics.HITS.labels("exact").inc()
        elif outcome == common_pb2.CACHE_OUTCOME_HIT_SEMANTIC:
            self.counters.semantic_hits += 1
            metrics.HITS.labels("semantic").inc()
        else:
            self.counters.misses += 1
            metrics.MISSES.inc()
        metrics.LOOKUPS.labels(
            self.backend.name,
            common_pb2.CacheOutcome.Name(outcome).removeprefix("CACHE_OUTCOME_").lower(),
        ).inc()
        return response

    async def _lookup(
        self, request: cache_pb2.LookupRequest, given: npt.NDArray[np.float32] | None
    ) -> cache_pb2.LookupResponse:
        if self._backend_down():
            # Recently failed: answer at once instead of waiting for another timeout.
            self.counters.backend_errors += 1
            metrics.BACKEND_ERRORS.labels(self.backend.name, "lookup_skipped").inc()
            return cache_pb2.LookupResponse(outcome=common_pb2.CACHE_OUTCOME_ERROR)
        skey = scope_key(request.scope)
        now = time.time()
        try:
            exact = await self.backend.get_exact(skey, exact_key(request.scope, request.text), now)
            if exact is not None:
                return cache_pb2.LookupResponse(
                    outcome=common_pb2.CACHE_OUTCOME_HIT_EXACT,
                    entry=exact.to_proto(),
                    similarity=1.0,
                    confidence=1.0,
                )
            if len(request.text.split()) > self.settings.max_semantic_words:
                metrics.LONG_QUESTIONS.inc()
                return cache_pb2.LookupResponse(outcome=common_pb2.CACHE_OUTCOME_MISS)
            vector = given if given is not None else await self._embed(request.text)
            found = await self.backend.search(skey, vector, self.settings.candidates, now)
        except BackendError as exc:
            self._record_backend_error("lookup", exc)
            return cache_pb2.LookupResponse(outcome=common_pb2.CACHE_OUTCOME_ERROR)
        candidates = [Candidate(e.question, e.vector, s) for e, s in found]
        decision = self.decider.decide(request.text, vector, candidates)
        reason = "; ".join([*(f"passed over {s}" for s in decision.skipped), decision.reason])
        if decision.served is not None:
            return cache_pb2.LookupResponse(
                outcome=common_pb2.CACHE_OUTCOME_HIT_SEMANTIC,
                entry=found[decision.served][0].to_proto(),
                similarity=decision.similarity,
                confidence=decision.confidence,
                reason=reason,
            )
        return cache_pb2.LookupResponse(
            outcome=common_pb2.CACHE_OUTCOME_MISS,
            similarity=decision.similarity,
            confidence=decision.confidence,
            reason=reason,
        )

    # -- Store --------------------------------------------------------------------

    def _refusal(self, request: cache_pb2.StoreRequest) -> str:
        if request.finish_reason != common_pb2.FINISH_REASON_STOP:
            return _FINISH_REFUSALS.get(
                request.finish_reason, f"finish reason {request.finish_reason} is not STOP"
            )
        if not request.answer.strip():
            return "empty answer"
        size = len(request.text.encode("utf-8")) + len(request.answer.encode("utf-8"))
        if size > self.settings.max_entry_bytes:
            return (
                f"oversize entry ({size} bytes > max_entry_bytes {self.settings.max_entry_bytes})"
            )
        return ""

    @grpc_errors
    async def Store(
        self, request: cache_pb2.StoreRequest, context: Context
    ) -> cache_pb2.StoreResponse:
        _require_tenant(request.scope)
        _require_text(request.text)
        given = caller_embedding(request.embedding)
        reason = self._refusal(request)
        if reason:
            metrics.STORES.labels(self.backend.name, "refused").inc()
            return cache_pb2.StoreResponse(stored=False, reason=reason)
        vector = given if given is not None else await self._embed(request.text)
        now = time.time()
        ttl = request.ttl_seconds or self.settings.default_ttl_s
        usage = request.usage
        entry = Entry(
            id=uuid.uuid4().hex,
            tenant=request.scope.tenant,
            scope=request.scope.scope,
            context_digest=request.scope.context_digest,
            scope_key=scope_key(request.scope),
            exact_key=exact_key(request.scope, request.text),
            question=request.text,
            answer=request.answer,
            model=request.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            cost_usd=usage.cost_usd,
            created_at=now,
            expires_at=now + ttl if ttl > 0 else 0.0,
            vector=vector,
        )
        try:
            evicted = await self.backend.put(entry, self.settings.max_entries)
        except BackendError as exc:
            self._record_backend_error("store", exc)
            metrics.STORES.labels(self.backend.name, "error").inc()
            return cache_pb2.StoreResponse(stored=False, reason="cache backend unavailable")
        if evicted:
            self.counters.evictions += evicted
            metrics.EVICTIONS.labels(self.backend.name).inc(evicted)
        metrics.STORES.labels(self.backend.name, "stored").inc()
        return cache_pb2.StoreResponse(stored=True, id=entry.id)

    # -- Invalidate / Stats ---------------------------------------------------------

    @grpc_errors
    async def Invalidate(
        self, request: cache_pb2.InvalidateRequest, context: Context
    ) -> cache_pb2.InvalidateResponse:
        _require_tenant(request.scope)
        if request.older_than_seconds < 0 or not math.isfinite(request.older_than_seconds):
            raise InvalidArgument(
                [FieldViolation("older_than_seconds", "must be a finite number >= 0")]
            )
        what = InvalidateFilter(
            tenant=request.scope.tenant,
            scope=request.scope.scope or None,
            context_digest=request.scope.context_digest or None,
            id=request.id or None,
            created_before=(
                time.time() - request.older_than_seconds if request.older_than_seconds else None
            ),
        )
        try:
            removed = await self.backend.invalidate(what)
        except BackendError as exc:
            self._record_backend_error("invalidate", exc)
            raise Unavailable("cache backend unavailable; nothing was invalidated") from exc
        return cache_pb2.InvalidateResponse(removed=removed)

    @grpc_errors
    async def Stats(
        self, request: cache_pb2.StatsRequest, context: Context
    ) -> cache_pb2.StatsResponse:
        entries = 0
        try:
            entries = await self.backend.count(request.tenant or None, time.time())
            if not request.tenant:
                metrics.ENTRIES.labels(self.backend.name).set(entries)
        except BackendError as exc:
            self._record_backend_error("stats", exc)
        c = self.counters
        return cache_pb2.StatsResponse(
            entries=entries,
            exact_hits=c.exact_hits,
            semantic_hits=c.semantic_hits,
            misses=c.misses,
            backend_errors=c.backend_errors,
            evictions=c.evictions,
            backend=self.backend.name,
        )
