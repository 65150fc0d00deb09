"""The shape every Gearshift server interceptor shares: one wrapper per method, reused.

The handler the server finds for a method never changes, so each interceptor wraps it
on the method's first call and hands out the same wrapper afterwards. Building closures
and a new handler object per call was measurable on the proxy's hot path, and a new
handler object also makes every interceptor before this one miss its own cache.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

# A string: grpc.RpcMethodHandler is generic only in its type stubs.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps the handlers of the methods it `wants`, once per method."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def wants(self, method: str) -> bool:
        """Gearshift's own methods by default (health and reflection are left alone)."""
        return method.startswith("/gearshift.")

    def wrap(self, handler: Handler, method: str) -> Handler:
        """The handler to serve `method` with (the same one to leave it alone)."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None or not self.wants(details.method):
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, details.method)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped
