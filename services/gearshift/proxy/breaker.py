"""A circuit breaker per upstream, so a dead provider costs one fast refusal, not a timeout.

closed --N consecutive failures--> open --cooldown--> half-open (one probe call)
half-open --probe succeeds--> closed; --probe fails--> open again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gearshift.v1 import inference_pb2

CLOSED = int(inference_pb2.BREAKER_STATE_CLOSED)
OPEN = int(inference_pb2.BREAKER_STATE_OPEN)
HALF_OPEN = int(inference_pb2.BREAKER_STATE_HALF_OPEN)


class CircuitBreaker:
    """Not thread-safe; lives on the event loop like everything else in the proxy."""

    def __init__(
        self,
        failure_threshold: int,
        cooldown_s: float,
        on_change: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.consecutive_failures = 0
        self._state = CLOSED
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._on_change = on_change
        self._clock = clock

    @property
    def state(self) -> int:
        """The state a caller would see now (an open breaker past its cooldown is half-open)."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            return HALF_OPEN
        return self._state

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 if it would now)."""
        if self._state != OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self._clock())

    def try_acquire(self) -> bool:
        """May a call go to this upstream now? In half-open only one probe at a time."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN or self._probe_in_flight:
            return False
        self._set(HALF_OPEN)
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self._probe_in_flight = False
        self._set(CLOSED)

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        was_probe = self._probe_in_flight
        self._probe_in_flight = False
        if (
            was_probe
            or self._state == HALF_OPEN
            or (self._state == CLOSED and self.consecutive_failures >= self.failure_threshold)
        ):
            self._opened_at = self._clock()
            self._set(OPEN)

    def release(self) -> None:
        """The call ended without a verdict (e.g. the client cancelled): free the probe slot."""
        self._probe_in_flight = False

    def _set(self, state: int) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
