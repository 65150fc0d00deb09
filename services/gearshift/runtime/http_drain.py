"""The HTTP side of a `Drain`: an aiohttp middleware that counts requests and refuses new ones.

While the process drains, the HTTP port stays open (the runner is cleaned up only after
the drain) and every new request gets a 503 with Retry-After in the API's own error shape,
with `Connection: close` so the client's pool reconnects to another replica. Requests
already running are counted until their handler returns (a streamed answer's handler
returns after its last event), so the host waits for them as for gRPC calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gearshift.runtime.drain import Drain, Draining

Refusal = Callable[[Draining], web.StreamResponse]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def drain_middleware(drain: Drain, refuse: Refusal) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware; `refuse` renders the 503 (it must set Retry-After)."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if drain.draining:
            response = refuse(drain.refusal())
            response.force_close()
            return response
        drain.enter()
        try:
            response = await handler(request)
        finally:
            drain.leave()
        if drain.draining:
            response.force_close()  # this connection's next request would only be refused
        return response

    return middleware
