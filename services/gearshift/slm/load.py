"""Live load figures of the SLM server: what the router and the operator steer by.

Two sources feed one `LoadTracker`:

- vLLM's engine reports scheduler and iteration statistics after every step through
  its stat-logger hook (`StatLoggerBase.record`); `EngineStatsLogger` forwards them
  here. That gives the engine's own view of running/waiting requests, KV-cache use
  and generated tokens, not an estimate from the gRPC side.
- The servicer reports per-request facts only it knows: time to first token as the
  client sees it (receipt to first token), finish reasons, and aborts it ordered.

The engine only reports while it steps, so an idle engine keeps its last snapshot;
`snapshot()` therefore caps running/waiting by the engine's count of unfinished
requests, which drops to zero the moment the last request ends or is aborted.

The same figures are exported to Prometheus under `gearshift_slm_*` by a collector
(read on scrape, so the values are never stale); vLLM's own `vllm:*` metrics appear
beside them because the engine registers them in the default registry.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

TOKENS_WINDOW_S = 10.0
TTFT_SAMPLES = 256


@dataclass(frozen=True)
class LoadSnapshot:
    """One consistent reading of the load figures (the `LoadReport` message's content)."""

    running_requests: int
    waiting_requests: int
    kv_cache_usage: float
    generated_tokens_per_second: float
    time_to_first_token_p50_ms: float


class LoadTracker:
    """Accumulates engine statistics and per-request facts; thread-safe, cheap to read."""

    def __init__(
        self,
        unfinished_requests: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = TOKENS_WINDOW_S,
    ) -> None:
        self._unfinished = unfinished_requests
        self._clock = clock
        self._window_s = window_s
        self._lock = threading.Lock()
        self._started = clock()
        # Engine view (latest scheduler snapshot).
        self.engine_running = 0
        self.engine_waiting = 0
        self.engine_kv_cache_usage = 0.0
        self.peak_running = 0
        # Token flow.
        self._token_events: deque[tuple[float, int]] = deque()
        self.generated_tokens_total = 0
        self.prompt_tokens_total = 0
        # Requests.
        self._ttft_ms: deque[float] = deque(maxlen=TTFT_SAMPLES)
        self.finished_total: dict[str, int] = {}
        self.aborted_total: dict[str, int] = {}
        self.engine_finished_ids: deque[str] = deque(maxlen=1024)
        self.in_flight = 0
        self._last_progress = self._started  # last engine step, or first call after idle

    # -- engine side ------------------------------------------------------------------

    def record_scheduler(self, running: int, waiting: int, kv_cache_usage: float) -> None:
        with self._lock:
            self._last_progress = self._clock()
            self.engine_running = running
            self.engine_waiting = waiting
            self.engine_kv_cache_usage = kv_cache_usage
            self.peak_running = max(self.peak_running, running)

    def record_iteration(
        self, generated_tokens: int, prompt_tokens: int, finished_ids: Iterable[str]
    ) -> None:
        now = self._clock()
        with self._lock:
            self._last_progress = now
            if generated_tokens:
                self._token_events.append((now, generated_tokens))
                self.generated_tokens_total += generated_tokens
            self.prompt_tokens_total += prompt_tokens
            self.engine_finished_ids.extend(finished_ids)
            self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self._window_s
        while self._token_events and self._token_events[0][0] < horizon:
            self._token_events.popleft()

    # -- servicer side ----------------------------------------------------------------

    def request_started(self) -> None:
        with self._lock:
            if self.in_flight == 0:
                self._last_progress = self._clock()  # an idle engine is not a stalled one
            self.in_flight += 1

    def stalled_for_s(self) -> float:
        """How long calls have been waiting without the engine taking a single step.

        0 while nothing is in flight. A live engine steps many times a second while it has
        work; a wedged one (its process stopped, a hung kernel) never does.
        """
        with self._lock:
            if self.in_flight <= 0:
                return 0.0
            return max(0.0, self._clock() - self._last_progress)

    def request_ended(self, finish_reason: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self.finished_total[finish_reason] = self.finished_total.get(finish_reason, 0) + 1

    def record_ttft(self, ttft_ms: float) -> None:
        with self._lock:
            self._ttft_ms.append(ttft_ms)

    def record_abort(self, reason: str) -> None:
        with self._lock:
            self.aborted_total[reason] = self.aborted_total.get(reason, 0) + 1

    def reset_peak(self) -> None:
        with self._lock:
            self.peak_running = self.engine_running

    # -- readers ----------------------------------------------------------------------

    def snapshot(self) -> LoadSnapshot:
        unfinished = self._unfinished()
        now = self._clock()
        with self._lock:
            self._trim(now)
            running = min(self.engine_running, unfinished)
            waiting = min(self.engine_waiting, max(unfinished - running, 0))
            kv = self.engine_kv_cache_usage if unfinished else 0.0
            span = min(self._window_s, max(now - self._started, 1e-3))
            tokens = sum(n for _, n in self._token_events)
            ttft = statistics.median(self._ttft_ms) if self._ttft_ms else 0.0
        return LoadSnapshot(
            running_requests=running,
            waiting_requests=waiting,
            kv_cache_usage=max(0.0, min(1.0, kv)),
            generated_tokens_per_second=tokens / span,
            time_to_first_token_p50_ms=ttft,
        )

    def counters(self) -> tuple[int, int, dict[str, int], dict[str, int]]:
        with self._lock:
            return (
                self.generated_tokens_total,
                self.prompt_tokens_total,
                dict(self.finished_total),
                dict(self.aborted_total),
            )


class LoadCollector(Collector):
    """Exports a tracker's figures as `gearshift_slm_*` metrics, computed at scrape time."""

    def __init__(self, tracker: LoadTracker, model: str) -> None:
        self.tracker = tracker
        self.model = model

    def describe(self) -> list[Metric]:
        return []  # collected lazily; no fixed description needed for registration

    def collect(self) -> Iterator[Metric]:
        snap = self.tracker.snapshot()
        generated, prompt, finished, aborted = self.tracker.counters()
        labels = ["model"]
        value = [self.model]

        def gauge(name: str, doc: str, v: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(value, v)
            return g

        yield gauge(
            "gearshift_slm_running_requests", "Requests being generated now.", snap.running_requests
        )
        yield gauge(
            "gearshift_slm_waiting_requests",
            "Requests queued in the engine.",
            snap.waiting_requests,
        )
        yield gauge(
            "gearshift_slm_kv_cache_usage_ratio",
            "Share of the KV cache in use (0-1).",
            snap.kv_cache_usage,
        )
        yield gauge(
            "gearshift_slm_generated_tokens_per_second",
            f"Generated tokens per second over the last {TOKENS_WINDOW_S:g} s.",
            snap.generated_tokens_per_second,
        )
        yield gauge(
            "gearshift_slm_time_to_first_token_p50_seconds",
            "Median time to first token over recent requests.",
            snap.time_to_first_token_p50_ms / 1000.0,
        )
        tokens = CounterMetricFamily(
            "gearshift_slm_generated_tokens", "Tokens generated.", labels=labels
        )
        tokens.add_metric(value, generated)
        yield tokens
        prompts = CounterMetricFamily(
            "gearshift_slm_prompt_tokens", "Prompt tokens processed.", labels=labels
        )
        prompts.add_metric(value, prompt)
        yield prompts
        done = CounterMetricFamily(
            "gearshift_slm_requests",
            "Generation requests ended, by finish reason.",
            labels=[*labels, "finish_reason"],
        )
        for reason, count in sorted(finished.items()):
            done.add_metric([*value, reason], count)
        yield done
        aborts = CounterMetricFamily(
            "gearshift_slm_aborted_requests",
            "Engine requests aborted, by cause (cancelled, deadline, error).",
            labels=[*labels, "reason"],
        )
        for reason, count in sorted(aborted.items()):
            aborts.add_metric([*value, reason], count)
        yield aborts


def register_collector(
    tracker: LoadTracker, model: str, registry: CollectorRegistry = REGISTRY
) -> LoadCollector:
    collector = LoadCollector(tracker, model)
    registry.register(collector)
    return collector


def make_stat_logger_factory(tracker: LoadTracker) -> Callable[..., Any]:
    """Returns a per-engine stat-logger factory for `AsyncLLM(stat_loggers=[...])`.

    The class is built lazily because its base class lives in vLLM, which this module
    must not import at load time (the Prometheus side is testable without vLLM).
    """
    from vllm.v1.metrics.loggers import StatLoggerBase

    class EngineStatsLogger(StatLoggerBase):  # type: ignore[misc]
        """Forwards each engine step's statistics to the tracker."""

        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                tracker.record_scheduler(
                    int(scheduler_stats.num_running_reqs),
                    int(scheduler_stats.num_waiting_reqs)
                    + int(scheduler_stats.num_skipped_waiting_reqs),
                    float(scheduler_stats.kv_cache_usage),
                )
            if iteration_stats is not None:
                tracker.record_iteration(
                    int(iteration_stats.num_generation_tokens),
                    int(iteration_stats.num_prompt_tokens),
                    [
                        str(f.request_id)
                        for f in iteration_stats.finished_requests
                        if f.request_id is not None
                    ],
                )

        def log_engine_initialized(self) -> None:
            return None

    def factory(vllm_config: Any, engine_index: int = 0) -> StatLoggerBase:
        return EngineStatsLogger(vllm_config, engine_index)

    return factory
