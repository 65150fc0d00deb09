"""Drain: the port stays open, health says NOT_SERVING, new calls get UNAVAILABLE.

grpc.aio's own `server.stop(grace)` closes the listening socket at once, so a probe or a
client sees "connection refused" and cannot tell a draining server from a dead one. This
interceptor lets the host keep serving health checks while it refuses new work with a
retryable UNAVAILABLE (clients and the router fail over) and counts the calls still in
flight, so the host closes the port only once they are done or the grace period is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc

from gearshift.runtime.interceptors import Handler, WrappingInterceptor

ALWAYS_SERVED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class DrainInterceptor(WrappingInterceptor):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start_draining(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no call is in flight; False if `timeout_s` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

    def _enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    def wants(self, method: str) -> bool:
        return not method.startswith(ALWAYS_SERVED)

    def wrap(self, handler: Handler, method: str) -> Handler:
        if handler.unary_unary is not None:
            return self._wrap_unary(handler)
        if handler.unary_stream is not None:
            return self._wrap_stream(handler)
        return handler  # no client-streaming methods in the contracts

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            f"{self.service} is draining (shutting down); retry on another replica",
        )

    def _wrap_unary(
        self, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        inner = cast(Callable[..., Awaitable[Any]], handler.unary_unary)

        async def unary(request: Any, context: Any) -> Any:
            if self.draining:
                await self._refuse(context)
            self._enter()
            try:
                return await inner(request, context)
            finally:
                self._leave()

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_stream(
        self, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        inner = cast(Callable[..., AsyncIterator[Any]], handler.unary_stream)

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if self.draining:
                await self._refuse(context)
            self._enter()
            try:
                async for item in inner(request, context):
                    yield item
            finally:
                self._leave()

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
