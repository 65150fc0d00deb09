"""Drain: the ports stay open, health says NOT_SERVING, new calls are told to go elsewhere.

grpc.aio's own `server.stop(grace)` closes the listening socket at once (and aiohttp's
runner cleanup does the same for HTTP), so a probe or a client would see "connection
refused" and could not tell a draining server from a dead one. Instead the process keeps
both servers running for the whole drain and refuses new work itself: gRPC calls get a
retryable UNAVAILABLE with a retry hint, HTTP requests a 503 with Retry-After (the router
and gRPC clients with a retry policy fail over). One `Drain` counts the calls still in
flight on every front door, so the host stops its servers only once all of them are done
or the drain deadline has passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from gearshift.runtime.errors import GearshiftError
from gearshift.runtime.interceptors import Handler, WrappingInterceptor

ALWAYS_SERVED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# How long a refused caller should wait before retrying. Another replica can take the call
# at once; the hint only keeps a client that retries the same address (one pod, no
# Service) from spinning while this process exits.
RETRY_AFTER_S = 1.0
# gRPC's server pushback header: a client with a retry policy waits this long, then retries.
PUSHBACK_HEADER = "grpc-retry-pushback-ms"


class Draining(GearshiftError):
    """A call refused because the process is shutting down: retry on another replica."""

    def __init__(self, service: str, retry_after_s: float = RETRY_AFTER_S) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"{service} is draining (shutting down); retry on another replica "
            f"(after {retry_after_s:g} s for this address)",
            "DRAINING",
            code=grpc.StatusCode.UNAVAILABLE,
        )

    def details(self) -> list[Any]:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after_s * 1e9))
        return [error_details_pb2.RetryInfo(retry_delay=delay), *super().details()]

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The status details plus the pushback header, for `context.abort`."""
        status = self.to_status()
        pushback = (PUSHBACK_HEADER, str(int(self.retry_after_s * 1000)))
        return (*tuple(status.trailing_metadata), pushback)


class Drain:
    """One process's drain state: whether it is draining, and the calls still in flight.

    Shared by the gRPC server (through `DrainInterceptor`) and any HTTP server in the same
    process (the router's OpenAI API), so "idle" means idle on every port.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        self.draining = True

    def refusal(self) -> Draining:
        return Draining(self.service)

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no call is in flight; False if `timeout_s` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True


class DrainInterceptor(WrappingInterceptor):
    """The gRPC side of a `Drain`: counts calls, refuses new ones while draining."""

    def __init__(self, drain: Drain) -> None:
        super().__init__()
        self.drain = drain

    def wants(self, method: str) -> bool:
        return not method.startswith(ALWAYS_SERVED)

    def wrap(self, handler: Handler, method: str) -> Handler:
        if handler.unary_unary is not None:
            return self._wrap_unary(handler)
        if handler.unary_stream is not None:
            return self._wrap_stream(handler)
        return handler  # no client-streaming methods in the contracts

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        refusal = self.drain.refusal()
        await context.abort(
            refusal.code, refusal.message, trailing_metadata=refusal.trailing_metadata()
        )

    def _wrap_unary(
        self, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        inner = cast(Callable[..., Awaitable[Any]], handler.unary_unary)
        drain = self.drain

        async def unary(request: Any, context: Any) -> Any:
            if drain.draining:
                await self._refuse(context)
            drain.enter()
            try:
                return await inner(request, context)
            finally:
                drain.leave()

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_stream(
        self, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        inner = cast(Callable[..., AsyncIterator[Any]], handler.unary_stream)
        drain = self.drain

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if drain.draining:
                await self._refuse(context)
            drain.enter()
            try:
                async for item in inner(request, context):
                    yield item
            finally:
                drain.leave()

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
