"""Usage, cost and upstream-health metrics, plus the live load figures of GetModelInfo.

Metrics are module-level (one prometheus registry per process). Labels carry tenant,
served model and upstream *names*, never URLs with credentials or keys.
"""

from __future__ import annotations

import statistics
import time
from collections import deque

from prometheus_client import Counter, Gauge, Histogram

from gearshift.proxy.config import PriceConfig
from gearshift.runtime.metrics import child
from gearshift.v1 import common_pb2

TOKENS = Counter(
    "gearshift_proxy_tokens_total",
    "Tokens processed through the proxy, by tenant, served model and kind (prompt|completion).",
    ["tenant", "model", "kind"],
)
COST = Counter(
    "gearshift_proxy_cost_usd_total",
    "Cost in US dollars from the price table, by tenant and served model.",
    ["tenant", "model"],
)
REQUESTS = Counter(
    "gearshift_proxy_requests_total",
    "Requests answered or refused by the proxy, by tenant, served model and outcome.",
    ["tenant", "model", "outcome"],
)
UPSTREAM_ATTEMPTS = Counter(
    "gearshift_proxy_upstream_attempts_total",
    "HTTP attempts to upstreams, by served model, upstream and outcome "
    "(ok, http_<status>, connect_error, timeout, malformed, truncated, cancelled).",
    ["model", "upstream", "outcome"],
)
UPSTREAM_LATENCY = Histogram(
    "gearshift_proxy_upstream_seconds",
    "Time of successful upstream calls (unary: whole answer; stream: first event).",
    ["model", "upstream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
BREAKER_STATE = Gauge(
    "gearshift_proxy_breaker_state",
    "Circuit breaker state per upstream: 1 closed, 2 open, 3 half-open (BreakerState enum).",
    ["model", "upstream"],
)
BREAKER_OPENED = Counter(
    "gearshift_proxy_breaker_opened_total",
    "Times an upstream's circuit breaker opened.",
    ["model", "upstream"],
)
RATE_LIMITED = Counter(
    "gearshift_proxy_rate_limited_total",
    "Requests refused by the per-tenant rate limit, by tenant and budget (requests|tokens).",
    ["tenant", "kind"],
)
RATE_LIMIT_SYNC_ERRORS = Counter(
    "gearshift_proxy_rate_limit_sync_errors_total",
    "Failed exchanges with the shared rate-limit store (this replica limited on its own).",
)


def estimate_tokens(text_chars: int) -> int:
    """Rough token count (4 characters per token) for budgets before the real usage is known."""
    return max(1, text_chars // 4)


def make_usage(prompt: int, completion: int, price: PriceConfig) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=price.cost(prompt, completion),
    )


def record_usage(tenant: str, model: str, usage: common_pb2.Usage) -> None:
    child(TOKENS, tenant, model, "prompt").inc(usage.prompt_tokens)
    child(TOKENS, tenant, model, "completion").inc(usage.completion_tokens)
    child(COST, tenant, model).inc(usage.cost_usd)


class LoadTracker:
    """In-flight requests, recent tokens/s and time-to-first-token of one served model."""

    def __init__(self, window_s: float = 10.0, ttft_samples: int = 256) -> None:
        self.running = 0
        self._window_s = window_s
        self._tokens: deque[tuple[float, int]] = deque()
        self._ttft: deque[float] = deque(maxlen=ttft_samples)

    def add_tokens(self, count: int) -> None:
        self._tokens.append((time.monotonic(), count))

    def add_ttft(self, ms: float) -> None:
        self._ttft.append(ms)

    def tokens_per_second(self) -> float:
        cutoff = time.monotonic() - self._window_s
        while self._tokens and self._tokens[0][0] < cutoff:
            self._tokens.popleft()
        return sum(n for _, n in self._tokens) / self._window_s

    def ttft_p50_ms(self) -> float:
        return statistics.median(self._ttft) if self._ttft else 0.0
