"""The router service: the app `gearshift serve router` runs (settings: settings.py).

One process serves the gRPC RouterService and (on `http_port`) the OpenAI-compatible HTTP
API in the same event loop, both over one pipeline, routing table and cache client.
"""

from __future__ import annotations

import logging

import grpc

from gearshift.router.clients.cache_client import CacheClient
from gearshift.router.clients.retriever_client import RetrieverClient
from gearshift.router.core.embedding import QueryEmbedder
from gearshift.router.openai.http import OpenAIHttpApi
from gearshift.router.outcomes.wiring import Outcomes
from gearshift.router.pipeline import Pipeline
from gearshift.router.scorer.protocol import DifficultyScorer, load_scorer
from gearshift.router.scorer.reload import ReloadingScorer, load_scorer_file
from gearshift.router.selection.selector import Selector
from gearshift.router.selection.tiebreak import SmallModelTieBreak
from gearshift.router.servicer import RouterServicer
from gearshift.router.settings import Settings
from gearshift.router.table.backends import BackendPool
from gearshift.router.table.cold_start import ColdStartWaiter
from gearshift.router.table.kube_watch import KubeRouteWatcher
from gearshift.router.table.routing_table import RoutesFileWatcher, RoutingTable
from gearshift.runtime.api_keys import KeyTable
from gearshift.runtime.drain import Drain
from gearshift.v1 import router_pb2, router_pb2_grpc

log = logging.getLogger(__name__)

__all__ = ["RouterApp", "Settings", "build_app"]


class RouterApp:
    """Wires auth, routing table, embedder, scorer, cache client and both front ends."""

    name = "router"

    def __init__(self, settings: Settings, scorer: DifficultyScorer | None = None) -> None:
        self.settings = settings
        self.keys = KeyTable(settings.api_keys_file)
        self.pool = BackendPool(close_grace_s=settings.backend_timeout_s)
        self.table = RoutingTable(
            self.pool,
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_s=settings.breaker_cooldown_s,
            poll_interval_s=settings.health_poll_interval_s,
            poll_timeout_s=settings.health_poll_timeout_s,
        )
        self.embedder = QueryEmbedder()
        self.scorer = ReloadingScorer(
            scorer
            or (
                load_scorer_file(settings.scorer_weights)
                if settings.scorer_weights
                else load_scorer()
            ),
            settings.scorer_weights,
            interval_s=settings.scorer_reload_interval_s,
        )
        self.cache = (
            CacheClient(settings.cache_address, lookup_timeout_s=settings.cache_timeout_s)
            if settings.cache_address
            else None
        )
        tiebreak = (
            SmallModelTieBreak(
                self.table,
                max(settings.selection_tiebreak_window, settings.selection_margin),
                settings.selection_tiebreak_timeout_s,
            )
            if settings.selection_tiebreak
            else None
        )
        self.selector = Selector(
            self.embedder.embed_many,
            settings.selection_threshold,
            settings.selection_margin,
            tiebreak,
        )
        self.table.listeners.append(self.selector.warm)
        self.retriever = RetrieverClient(settings.source_timeout_s, settings.retriever_api_key)
        self.pipeline = Pipeline(
            settings.pipeline_config(),
            self.table,
            self.embedder,
            self.scorer,
            self.cache,
            self.selector,
            self.retriever,
            settings.multi_config(),
        )
        self.pipeline.planner.cold_start = ColdStartWaiter(
            self.table, settings.cold_start_wait_s, settings.cold_start_margin_s
        )
        self.outcomes = (
            Outcomes.build(settings, self.pipeline) if settings.outcomes_enabled else None
        )
        if self.outcomes is None and settings.shadow_share > 0:
            log.warning("shadow_share is set but outcomes_enabled is off: no shadow judging")
        self.http = (
            OpenAIHttpApi(
                self.pipeline,
                self.keys,
                settings.host,
                settings.http_port,
                drop_unsupported_params=settings.drop_unsupported_params,
                limits=settings.input_limits(),
                reuse_port=settings.reuse_port,
                outcomes=self.outcomes.service if self.outcomes else None,
            )
            if settings.http_port >= 0
            else None
        )
        self.routes_watcher = (
            RoutesFileWatcher(settings.routes_file, self.table) if settings.routes_file else None
        )
        self.kube_watcher = (
            KubeRouteWatcher(self.table, settings.watch_namespace) if settings.kubernetes else None
        )
        if self.kube_watcher is not None:
            self.table.demand_signal = self.kube_watcher.signal_demand
        if self.keys.size == 0:
            log.warning("no API keys loaded: every request will be refused (UNAUTHENTICATED)")

    def use_drain(self, drain: Drain) -> None:
        """The HTTP API joins the gRPC server's drain: one count, both ports open."""
        if self.http is not None:
            self.http.drain = drain

    def register(self, server: grpc.aio.Server) -> list[str]:
        router_pb2_grpc.add_RouterServiceServicer_to_server(
            RouterServicer(
                self.pipeline,
                self.keys,
                self.settings.input_limits(),
                self.outcomes.service if self.outcomes else None,
            ),
            server,
        )
        return [router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name]

    async def start(self) -> None:
        if self.routes_watcher is not None:
            self.routes_watcher.load()
            self.routes_watcher.start()
        if self.kube_watcher is not None:
            self.kube_watcher.start()
        self.table.start()
        self.scorer.start()
        if self.outcomes is not None:
            await self.outcomes.start()
        await self.embedder.start()
        if self.http is not None:
            await self.http.start()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self.routes_watcher is not None:
            await self.routes_watcher.stop()
        if self.kube_watcher is not None:
            await self.kube_watcher.stop()
        await self.table.stop()
        await self.scorer.stop()
        if self.outcomes is not None:
            await self.outcomes.stop()
        if self.cache is not None:
            await self.cache.close()
        await self.pool.close()
        await self.retriever.close()
        await self.embedder.close()


def build_app(settings: Settings) -> RouterApp:
    return RouterApp(settings)
