"""Choosing an upstream, retrying it, and failing over to the next one.

Order: ascending priority; within one priority a weighted random order (each request
draws its own, so weights become traffic shares). On each upstream: up to
`retry.max_attempts` attempts, retrying only what is safe to repeat (connection errors,
429 honouring Retry-After, 502/503/504) with exponential backoff and jitter; anything
else moves straight on to the next upstream. The incoming call's deadline bounds every
attempt and every wait. Once an attempt has returned, the dispatcher is done: a stream
that has started is never retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gearshift.proxy.accounting import (
    BREAKER_OPENED,
    BREAKER_STATE,
    UPSTREAM_ATTEMPTS,
    UPSTREAM_LATENCY,
    LoadTracker,
)
from gearshift.proxy.breaker import OPEN, CircuitBreaker
from gearshift.proxy.config import BreakerConfig, ModelConfig, RetryConfig, UpstreamConfig
from gearshift.proxy.upstream import UpstreamClient, UpstreamError
from gearshift.runtime.errors import DeadlineExceeded, FieldViolation, InvalidArgument, Unavailable
from gearshift.runtime.metrics import child
from gearshift.v1 import inference_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Route:
    """One upstream of one served model, with its own pool and breaker."""

    model: str
    config: UpstreamConfig
    client: UpstreamClient
    breaker: CircuitBreaker

    @property
    def name(self) -> str:
        return self.config.name

    def status(self) -> inference_pb2.UpstreamStatus:
        return inference_pb2.UpstreamStatus(
            name=self.config.name,
            priority=self.config.priority,
            weight=self.config.weight,
            breaker=self.breaker.state,  # type: ignore[arg-type]
            consecutive_failures=self.breaker.consecutive_failures,
        )

    def count(self, outcome: str) -> None:
        child(UPSTREAM_ATTEMPTS, self.model, self.config.name, outcome).inc()


def backoff_delay(attempt: int, retry: RetryConfig, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random."""
    cap = min(retry.backoff_max_s, retry.backoff_initial_s * (2.0**attempt))
    return cap / 2 + rng.uniform(0, cap / 2)


class ModelBackend:
    """Everything the proxy keeps for one served model."""

    def __init__(
        self,
        config: ModelConfig,
        retry: RetryConfig,
        breaker: BreakerConfig,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.retry = retry
        self.load = LoadTracker()
        self._rng = rng or random.Random()
        self.routes = [self._route(u, breaker) for u in config.upstreams]

    def _route(self, upstream: UpstreamConfig, cfg: BreakerConfig) -> Route:
        model, name = self.config.name, upstream.name

        def on_change(state: int) -> None:
            BREAKER_STATE.labels(model, name).set(state)
            if state == OPEN:
                BREAKER_OPENED.labels(model, name).inc()
                log.warning("circuit breaker of upstream %r (model %s) opened", name, model)
            else:
                log.info("circuit breaker of upstream %r (model %s) is now %d", name, model, state)

        breaker = CircuitBreaker(cfg.failure_threshold, cfg.cooldown_s, on_change)
        BREAKER_STATE.labels(model, name).set(breaker.state)
        return Route(model, upstream, UpstreamClient(upstream), breaker)

    async def aclose(self) -> None:
        await asyncio.gather(*(r.client.aclose() for r in self.routes))

    def answerable(self) -> bool:
        """False while every upstream's breaker is open (it stopped answering).

        A half-open breaker counts as answerable: the next request is the probe that
        closes it again, so readiness returns as soon as the upstream does.
        """
        return any(r.breaker.state != OPEN for r in self.routes)

    def order(self) -> list[Route]:
        """Priority ascending; weighted random order within a priority (Efraimidis-Spirakis)."""
        keyed = [
            (r.config.priority, -(self._rng.random() ** (1.0 / r.config.weight)), i)
            for i, r in enumerate(self.routes)
        ]
        return [self.routes[i] for _, _, i in sorted(keyed)]

    async def dispatch(
        self,
        attempt: Callable[[Route, float | None], Awaitable[T]],
        deadline: float | None,
    ) -> tuple[Route, T]:
        """Runs `attempt` on upstreams until one succeeds; raises a GearshiftError otherwise.

        `attempt` raises UpstreamError for a failed try. Success is recorded on the breaker
        by the caller (a stream is only a success once it has finished).
        """
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        for route in self.order():
            if not route.breaker.try_acquire():
                errors.append(
                    f"upstream {route.name!r}: circuit open "
                    f"(next probe in {route.breaker.retry_in_s():.1f}s)"
                )
                continue
            for n in range(self.retry.max_attempts):
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    route.breaker.release()
                    raise DeadlineExceeded(self._summary("deadline exceeded", errors))
                started = loop.time()
                try:
                    result = await attempt(route, remaining)
                except UpstreamError as exc:
                    route.count(exc.outcome)
                    if exc.client_error:
                        route.breaker.release()
                        raise InvalidArgument(
                            [FieldViolation("request", exc.message)],
                            f"upstream rejected the request: {exc.message}",
                        ) from None
                    route.breaker.record_failure()
                    errors.append(exc.message)
                    if deadline is not None and loop.time() >= deadline:
                        raise DeadlineExceeded(self._summary("deadline exceeded", errors)) from None
                    log.warning("attempt %d at %s", n + 1, exc.message)
                    delay = self._retry_delay(exc, n, deadline, loop.time())
                    if delay is None:
                        break
                    await asyncio.sleep(delay)
                    if not route.breaker.try_acquire():
                        errors.append(f"upstream {route.name!r}: circuit opened")
                        break
                except asyncio.CancelledError:
                    route.count("cancelled")
                    route.breaker.release()
                    raise
                except Exception:
                    route.count("proxy_error")
                    route.breaker.release()
                    raise
                else:
                    child(UPSTREAM_LATENCY, self.config.name, route.name).observe(
                        loop.time() - started
                    )
                    return route, result
        raise Unavailable(self._summary("no upstream could answer", errors), "UPSTREAMS_FAILED")

    def _retry_delay(
        self, exc: UpstreamError, n: int, deadline: float | None, now: float
    ) -> float | None:
        """How long to wait before retrying the same upstream; None means fail over."""
        if not exc.retryable or n + 1 >= self.retry.max_attempts:
            return None
        if exc.retry_after_s is not None:
            if exc.retry_after_s > self.retry.max_retry_after_s:
                return None
            delay = exc.retry_after_s
        else:
            delay = backoff_delay(n, self.retry, self._rng)
        if deadline is not None and now + delay >= deadline:
            return None
        return delay

    def _summary(self, head: str, errors: list[str]) -> str:
        detail = "; ".join(errors[-6:]) if errors else "no attempt was made"
        return f"model {self.config.name!r}: {head}: {detail}"
