"""Per-tenant request and token budgets (token buckets refilled continuously).

Requests are charged before the call. Tokens are charged twice: an estimate of the
prompt before the call (so a burst of huge prompts is refused early) and the rest of
the real usage after it; the bucket may go into debt, and a tenant in debt is refused
until it refills. Over a limit is RESOURCE_EXHAUSTED with the exact wait in RetryInfo.

The buckets live in this process. With several replicas, `shared_limits.SharedUsage`
exchanges what each replica charged (`drain_charges`) and takes what the others
charged from these buckets (`charge`), so all replicas keep to one budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gearshift.proxy.config import RateLimit, RateLimitConfig


class TokenBucket:
    def __init__(self, per_minute: float, clock: Callable[[], float]) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute
        self._clock = clock
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        self._refill()
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount


@dataclass
class Refusal:
    kind: str  # "requests" or "tokens"
    retry_after_s: float


class _TenantBuckets:
    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self.requests = (
            TokenBucket(limit.requests_per_minute, clock) if limit.requests_per_minute else None
        )
        self.tokens = (
            TokenBucket(limit.tokens_per_minute, clock) if limit.tokens_per_minute else None
        )


class RateLimiter:
    def __init__(
        self, config: RateLimitConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        self._tenants: dict[str, _TenantBuckets] = {}
        self._charged: dict[tuple[str, str], float] = {}  # since the last drain_charges()

    def _buckets(self, tenant: str) -> _TenantBuckets:
        buckets = self._tenants.get(tenant)
        if buckets is None:
            buckets = _TenantBuckets(self._config.for_tenant(tenant), self._clock)
            self._tenants[tenant] = buckets
        return buckets

    def admit(self, tenant: str, estimated_prompt_tokens: int) -> Refusal | None:
        """Charges one request and the prompt estimate, or says how long to wait."""
        b = self._buckets(tenant)
        if b.requests is not None:
            wait = b.requests.wait_for(1.0)
            if wait > 0:
                return Refusal("requests", wait)
        if b.tokens is not None:
            # A prompt larger than the whole budget is judged against the full bucket only.
            need = min(float(estimated_prompt_tokens), b.tokens.capacity)
            wait = b.tokens.wait_for(max(need, 1.0))
            if wait > 0:
                return Refusal("tokens", wait)
        if b.requests is not None:
            self._take(tenant, "requests", b.requests, 1.0)
        if b.tokens is not None:
            self._take(tenant, "tokens", b.tokens, float(estimated_prompt_tokens))
        return None

    def settle(self, tenant: str, estimated_prompt_tokens: int, actual_total_tokens: int) -> None:
        """Charges the difference between the estimate and the real usage."""
        b = self._buckets(tenant)
        if b.tokens is not None:
            amount = float(actual_total_tokens - estimated_prompt_tokens)
            self._take(tenant, "tokens", b.tokens, amount)

    def _take(self, tenant: str, kind: str, bucket: TokenBucket, amount: float) -> None:
        bucket.take(amount)
        key = (tenant, kind)
        self._charged[key] = self._charged.get(key, 0.0) + amount

    def drain_charges(self) -> dict[tuple[str, str], float]:
        """What this replica charged per (tenant, kind) since the last drain."""
        charged, self._charged = self._charged, {}
        return charged

    def restore_charges(self, charged: dict[tuple[str, str], float]) -> None:
        """Puts drained charges back (they could not be reported; report them later)."""
        for key, amount in charged.items():
            self._charged[key] = self._charged.get(key, 0.0) + amount

    def charge(self, tenant: str, kind: str, amount: float) -> None:
        """Takes what other replicas charged this tenant (not reported again)."""
        b = self._buckets(tenant)
        bucket = b.requests if kind == "requests" else b.tokens
        if bucket is not None:
            bucket.take(amount)
