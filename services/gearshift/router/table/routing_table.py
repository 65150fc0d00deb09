"""The routing table: routes from `ModelRoute` objects, data sources from `DataSource`
objects, plus live health and load per backend.

A table is an immutable snapshot; reloading builds a new one and swaps the reference, so a
request keeps the snapshot it started with and nothing in flight is dropped. Health, load
and breaker state are kept per endpoint (outside the snapshot) and survive reloads.
Health comes from polling each endpoint's `GetModelInfo` with a deadline; the breaker also
learns from real calls, so a dead backend is skipped after a few failures even between polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc

from gearshift.router.table.backends import BackendPool
from gearshift.routes import ModelRoute, load_routes
from gearshift.routes.data_source import DataSource, load_sources
from gearshift.routes.model_route import Capabilities
from gearshift.runtime.aiotasks import cancel_and_wait
from gearshift.v1 import inference_pb2

log = logging.getLogger(__name__)

TierName = Literal["slm", "llm"]
TIER_ORDER: dict[str, int] = {"slm": 0, "llm": 1}


@dataclass(frozen=True)
class Route:
    """What the router needs to know about one ModelRoute."""

    name: str
    tier: TierName
    model: str
    endpoints: tuple[str, ...]
    difficulty_min: float = 0.0
    difficulty_max: float = 1.0
    weight: int = 1
    priority: int = 0
    fallback: str | None = None
    max_share: float | None = None
    description: str = ""
    examples: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    capabilities: Capabilities = field(
        default_factory=lambda: Capabilities.model_validate({}), hash=False
    )

    def accepts(self, difficulty: float) -> bool:
        return self.difficulty_min <= difficulty <= self.difficulty_max

    @classmethod
    def from_model_route(cls, mr: ModelRoute) -> Route | None:
        """None when the route has no endpoint yet (not deployed, or not Ready)."""
        endpoint = mr.endpoint
        if not endpoint or not mr.ready:
            return None
        routing = mr.spec.routing
        # A comma-separated endpoint lists replicas the router balances itself (local mode).
        endpoints = tuple(e.strip() for e in endpoint.split(",") if e.strip())
        return cls(
            name=mr.name,
            tier=mr.spec.tier,
            model=mr.served_name,
            endpoints=endpoints,
            difficulty_min=routing.difficulty.min,
            difficulty_max=routing.difficulty.max,
            weight=routing.weight,
            priority=routing.priority,
            fallback=routing.fallback,
            max_share=routing.max_share,
            description=mr.spec.description,
            examples=tuple(mr.spec.examples),
            excludes=tuple(mr.spec.excludes),
            capabilities=mr.spec.capabilities,
        )


@dataclass(frozen=True)
class Source:
    """What the router needs to know about one DataSource."""

    name: str
    description: str
    endpoint: str
    tenant: str = "default"
    mode: str = "hybrid"
    top_k: int = 5
    examples: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    @classmethod
    def from_data_source(cls, ds: DataSource) -> Source | None:
        """None while the source has no retriever endpoint (the operator has not resolved it)."""
        if not ds.endpoint:
            return None
        return cls(
            name=ds.name,
            description=ds.spec.description,
            endpoint=ds.endpoint,
            tenant=ds.tenant,
            mode=ds.spec.kind,
            top_k=ds.spec.search.top_k,
            examples=tuple(ds.spec.examples),
            excludes=tuple(ds.spec.excludes),
        )


def sources_from_objects(objects: Iterable[DataSource]) -> list[Source]:
    out = []
    for ds in objects:
        source = Source.from_data_source(ds)
        if source is None:
            log.info("data source %s has no retriever endpoint yet; not routed", ds.name)
        else:
            out.append(source)
    return out


@dataclass(frozen=True)
class ColdRoute:
    """A scaleToZero route with no ready replica: not routable, but it can be woken."""

    name: str
    namespace: str
    tier: TierName
    # spec.lifecycle.startupSeconds: how long its engine may take to load (the cold hold).
    startup_seconds: int = 900


def cold_routes(objects: Iterable[ModelRoute]) -> list[ColdRoute]:
    """Routes that are scaled to zero (or still waking up) and allow it."""
    return [
        ColdRoute(mr.name, mr.namespace, mr.spec.tier, mr.spec.lifecycle.startup_seconds)
        for mr in objects
        if mr.spec.autoscaling is not None
        and mr.spec.autoscaling.scale_to_zero
        and Route.from_model_route(mr) is None
    ]


def routes_from_objects(objects: Iterable[ModelRoute]) -> list[Route]:
    out = []
    for mr in objects:
        route = Route.from_model_route(mr)
        if route is None:
            log.info("route %s has no ready endpoint yet; not routed", mr.name)
        else:
            out.append(route)
    return out


@dataclass
class EndpointState:
    """Live view of one backend endpoint."""

    healthy: bool | None = None  # None: not polled yet (assumed usable)
    load: float = 0.0  # running + waiting requests from the last load report
    inflight: int = 0  # calls this router has open to it right now
    consecutive_failures: int = 0
    open_until: float = 0.0  # breaker open until this monotonic time
    last_error: str = ""

    def breaker_open(self, now: float) -> bool:
        return now < self.open_until

    def usable(self, now: float) -> bool:
        return self.healthy is not False and not self.breaker_open(now)


@dataclass(frozen=True)
class Snapshot:
    """One version of the routing table."""

    routes: tuple[Route, ...] = ()
    version: int = 0
    by_name: dict[str, Route] = field(default_factory=dict)
    sources: tuple[Source, ...] = ()

    @classmethod
    def of(cls, routes: Sequence[Route], version: int, sources: Sequence[Source] = ()) -> Snapshot:
        return cls(tuple(routes), version, {r.name: r for r in routes}, tuple(sources))

    def source(self, name: str) -> Source | None:
        """A data source by its name."""
        return next((s for s in self.sources if s.name == name), None)

    def find(self, name: str) -> Route | None:
        """A route by its name, or by its served model name."""
        if name in self.by_name:
            return self.by_name[name]
        return next((r for r in self.routes if r.model == name), None)

    def tier(self, tier: str) -> list[Route]:
        return sorted((r for r in self.routes if r.tier == tier), key=lambda r: r.priority)


class RoutingTable:
    """The current snapshot plus per-endpoint health, load and circuit breakers."""

    def __init__(
        self,
        pool: BackendPool,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 5.0,
        poll_interval_s: float = 2.0,
        poll_timeout_s: float = 1.0,
    ) -> None:
        self.pool = pool
        self.breaker_failures = breaker_failures
        self.breaker_cooldown_s = breaker_cooldown_s
        self.poll_interval_s = poll_interval_s
        self.poll_timeout_s = poll_timeout_s
        self.snapshot = Snapshot()
        self.endpoints: dict[str, EndpointState] = {}
        self.retrievers: dict[str, EndpointState] = {}
        self._poller: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.cold: dict[str, ColdRoute] = {}
        # Set by the cluster watcher: asks the operator to scale a cold route from zero.
        self.demand_signal: Callable[[ColdRoute], None] | None = None
        # Called with every new snapshot (the selector re-embeds option metadata).
        self.listeners: list[Callable[[Snapshot], None]] = []

    # --- table updates -------------------------------------------------------------------
    def set_cold(self, cold: Sequence[ColdRoute]) -> None:
        """Routes scaled to zero, which `wake` can ask the operator to start."""
        self.cold = {c.name: c for c in cold}

    def wake(self, *, tier: str | None = None, name: str | None = None) -> list[str]:
        """Signals demand for cold routes of a tier (or one by name); returns their names."""
        woken = [
            c
            for c in self.cold.values()
            if (name is None or c.name == name) and (tier is None or c.tier == tier)
        ]
        if self.demand_signal is not None:
            for route in woken:
                self.demand_signal(route)
        return [c.name for c in woken]

    def replace(self, routes: Sequence[Route], sources: Sequence[Source] | None = None) -> None:
        """Swaps in a new snapshot; in-flight requests keep using the old one.

        `sources=None` keeps the current data sources (a caller that only knows routes).
        """
        if sources is None:
            sources = self.snapshot.sources
        names = [r.name for r in routes] + [f"source {s.name}" for s in sources]
        snapshot = Snapshot.of(routes, self.snapshot.version + 1, sources)
        live = {e for r in routes for e in r.endpoints}
        for endpoint in live:
            self.endpoints.setdefault(endpoint, EndpointState())
        for gone in [e for e in self.endpoints if e not in live]:
            del self.endpoints[gone]
        self.snapshot = snapshot
        self.pool.retain(live)
        self._changed.set()
        for listener in self.listeners:
            listener(snapshot)
        log.info("routing table v%d: %s", snapshot.version, ", ".join(names) or "(empty)")

    # --- data sources: breaker only (a retriever has no GetModelInfo to poll) --------------
    def retriever_state(self, endpoint: str) -> EndpointState:
        return self.retrievers.setdefault(endpoint, EndpointState())

    def source_usable(self, source: Source) -> bool:
        return not self.retriever_state(source.endpoint).breaker_open(time.monotonic())

    def record_source_result(self, source: Source, error: str = "") -> None:
        """A search's outcome: a failure counts towards the retriever's breaker."""
        state = self.retriever_state(source.endpoint)
        if not error:
            state.consecutive_failures = 0
            state.open_until = 0.0
            return
        state.consecutive_failures += 1
        state.last_error = error
        if state.consecutive_failures >= self.breaker_failures:
            state.open_until = time.monotonic() + self.breaker_cooldown_s

    # --- health --------------------------------------------------------------------------
    def state(self, endpoint: str) -> EndpointState:
        return self.endpoints.setdefault(endpoint, EndpointState())

    def route_usable(self, route: Route) -> bool:
        now = time.monotonic()
        return any(self.state(e).usable(now) for e in route.endpoints)

    def why_unusable(self, route: Route) -> str:
        now = time.monotonic()
        states = [self.state(e) for e in route.endpoints]
        if any(s.breaker_open(now) for s in states):
            return "breaker open"
        return "unhealthy" + (
            f" ({states[0].last_error})" if states and states[0].last_error else ""
        )

    def pick_endpoint(self, route: Route) -> str:
        """The least-loaded usable replica (ties broken at random); any replica if none is."""
        now = time.monotonic()
        usable = [e for e in route.endpoints if self.state(e).usable(now)] or list(route.endpoints)
        best = min(self.state(e).load + self.state(e).inflight for e in usable)
        return random.choice(
            [e for e in usable if self.state(e).load + self.state(e).inflight == best]
        )

    @contextlib.contextmanager
    def lease(self, endpoint: str) -> Iterator[EndpointState]:
        state = self.state(endpoint)
        state.inflight += 1
        try:
            yield state
        finally:
            state.inflight -= 1

    def record_success(self, endpoint: str) -> None:
        state = self.state(endpoint)
        state.consecutive_failures = 0
        state.open_until = 0.0
        state.healthy = True

    def record_failure(self, endpoint: str, error: str) -> None:
        state = self.state(endpoint)
        state.consecutive_failures += 1
        state.last_error = error
        if state.consecutive_failures >= self.breaker_failures:
            state.open_until = time.monotonic() + self.breaker_cooldown_s
            log.warning(
                "breaker open for %s after %d failures (%s)",
                endpoint,
                state.consecutive_failures,
                error,
            )

    async def poll_once(self) -> None:
        """Asks every endpoint for its model info and load, each with a deadline."""
        endpoints = list(self.endpoints)
        await asyncio.gather(*(self._poll(e) for e in endpoints))

    async def _poll(self, endpoint: str) -> None:
        stub = self.pool.stub(endpoint)
        try:
            info = await stub.GetModelInfo(
                inference_pb2.GetModelInfoRequest(), timeout=self.poll_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            state = self.endpoints.get(endpoint)
            if state is not None:
                if state.healthy is not False:
                    log.warning("backend %s unhealthy: %s", endpoint, exc.code().name)
                state.healthy = False
                state.last_error = exc.code().name
            return
        state = self.endpoints.get(endpoint)
        if state is None:
            return
        if state.healthy is False and info.ready:
            log.info("backend %s healthy again", endpoint)
        state.healthy = bool(info.ready)
        state.last_error = "" if info.ready else "not ready"
        state.load = float(info.load.running_requests + info.load.waiting_requests)

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("health poll failed")
            self._changed.clear()
            # Poll new endpoints at once; otherwise every poll_interval_s.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._changed.wait()

    def start(self) -> None:
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_loop(), name="router-health-poll")

    async def stop(self) -> None:
        await cancel_and_wait(self._poller)
        self._poller = None


class RoutesFileWatcher:
    """Reloads a local routes file when it changes; a broken file keeps the last good table."""

    def __init__(self, path: str, table: RoutingTable, interval_s: float = 0.5) -> None:
        self.path = Path(path)
        self.table = table
        self.interval_s = interval_s
        self._stamp: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> bool:
        """Loads the file if it changed; True when a new table was installed."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if stamp is None:
            log.error("routes file %s is missing; keeping the current table", self.path)
            return False
        try:
            text = self.path.read_text(encoding="utf-8")
            routes = routes_from_objects(load_routes(text))
            sources = sources_from_objects(load_sources(text))
        except (OSError, ValueError) as exc:
            log.error("routes file %s is invalid; keeping the current table: %s", self.path, exc)
            return False
        self.table.replace(routes, sources)
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.load()
            except Exception:
                log.exception("reloading %s failed", self.path)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="router-routes-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
