"""Holding a request for a route the router just woke from zero replicas.

A pinned request for a scaled-to-zero route used to fail at once (ROUTE_COLD) although
the router had just asked the operator to start a replica. The waiter holds it instead,
up to the cold hold (never past the request's own deadline), until the watch
puts the route in the routing table (Ready, with ready pods in its EndpointSlices), then
the request goes on as usual. If the time runs out the caller gets UNAVAILABLE naming the
route and the time waited, so a person knows to retry or raise the limit.

The hold is `cold_start_wait_s` when set; unset, it is the route's own
`lifecycle.startupSeconds` (the engine's load budget the startup probe allows) plus
`cold_start_margin_s` for what comes before the engine loads (scheduling, a GPU node
joining, the image pull, the weights fetch): a flat 60 s failed nearly every real wake.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gearshift.router.table.routing_table import Route, RoutingTable, Snapshot
from gearshift.runtime.errors import Unavailable

log = logging.getLogger(__name__)


class ColdStartWaiter:
    """Futures per route name, resolved by the routing table's snapshot listener."""

    def __init__(self, table: RoutingTable, wait_s: float | None, margin_s: float = 180.0) -> None:
        self.table = table
        self.wait_s = wait_s
        self.margin_s = margin_s
        self._waiting: dict[str, list[asyncio.Future[Route]]] = {}
        table.listeners.append(self._on_snapshot)

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        for name, futures in list(self._waiting.items()):
            route = snapshot.find(name)
            if route is None:
                continue
            for future in futures:
                if not future.done():
                    future.set_result(route)

    def hold_s(self, name: str) -> float:
        """The cold hold of one route: the setting, else its startupSeconds plus the margin."""
        if self.wait_s is not None:
            return self.wait_s
        cold = self.table.cold.get(name)
        startup = cold.startup_seconds if cold is not None else 900
        return float(startup) + self.margin_s

    def _describe(self, name: str) -> str:
        if self.wait_s is not None:
            return f"cold_start_wait_s {self.wait_s:g} s"
        return f"the route's startupSeconds plus {self.margin_s:g} s: {self.hold_s(name):g} s"

    async def wait(self, name: str, time_remaining: float) -> Route:
        """The route once it is routable; UNAVAILABLE (ROUTE_COLD) after the wait limit."""
        limit = max(0.0, min(self.hold_s(name), time_remaining))
        route = self.table.snapshot.find(name)
        if route is not None:
            return route
        if limit <= 0:
            raise Unavailable(
                f"route {name!r} is scaled to zero and is being started; retry shortly, or "
                "send the request with model 'auto' (no waiting: cold_start_wait_s is 0, or "
                "the request has no time left, or it is a dry run)",
                reason="ROUTE_COLD",
            )
        future: asyncio.Future[Route] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, []).append(future)
        started = time.monotonic()
        try:
            route = await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise Unavailable(
                f"route {name!r} was scaled to zero and had no ready replica after waiting "
                f"{limit:.1f} s for it to start ({self._describe(name)}, bounded by the "
                "request deadline); retry later, or send the request with model 'auto'",
                reason="ROUTE_COLD",
            ) from None
        finally:
            futures = self._waiting.get(name, [])
            if future in futures:
                futures.remove(future)
            if not futures:
                self._waiting.pop(name, None)
        log.info("route %s became ready after %.1f s; request proceeds", name,
                 time.monotonic() - started)  # fmt: skip
        return route
