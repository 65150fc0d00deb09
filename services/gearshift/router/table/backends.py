"""A pool of traced gRPC channels to InferenceService backends, one per endpoint.

Channels are shared by every request to the same endpoint (HTTP/2 multiplexing), so the
router pays a connection set-up once. When a routes reload drops an endpoint, its channel
is closed with a grace period so calls already running on it finish normally.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from gearshift.runtime.telemetry import insecure_channel
from gearshift.v1 import inference_pb2_grpc

log = logging.getLogger(__name__)

# Reconnect quickly after a backend restarts (the gRPC default backs off to 120 s).
CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2_000,
    "grpc.max_receive_message_length": 16 * 1024 * 1024,
    # A DNS name that resolves to several pods (a headless Service) gets a connection to
    # each and spreads calls over them; one address behaves as before.
    "grpc.lb_policy_name": "round_robin",
}


@dataclass
class _Backend:
    channel: grpc.aio.Channel
    stub: inference_pb2_grpc.InferenceServiceAsyncStub


class BackendPool:
    """Hands out InferenceService stubs by endpoint, creating channels lazily."""

    def __init__(self, close_grace_s: float = 30.0) -> None:
        self.close_grace_s = close_grace_s
        self._backends: dict[str, _Backend] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def stub(self, endpoint: str) -> inference_pb2_grpc.InferenceServiceAsyncStub:
        backend = self._backends.get(endpoint)
        if backend is None:
            channel = insecure_channel(endpoint, **CHANNEL_OPTIONS)
            backend = _Backend(channel, inference_pb2_grpc.InferenceServiceStub(channel))
            self._backends[endpoint] = backend
        return backend.stub

    def retain(self, endpoints: set[str]) -> None:
        """Closes (gracefully, in the background) channels to endpoints no longer routed."""
        for endpoint in [e for e in self._backends if e not in endpoints]:
            backend = self._backends.pop(endpoint)
            log.info("closing channel to %s (grace %.0fs)", endpoint, self.close_grace_s)
            task = asyncio.create_task(backend.channel.close(self.close_grace_s))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        backends, self._backends = list(self._backends.values()), {}
        await asyncio.gather(*(b.channel.close(None) for b in backends), return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)
