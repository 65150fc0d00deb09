"""The router service: settings, and the app `gearshift serve router` runs.

One process serves the gRPC RouterService and (on `http_port`) the OpenAI-compatible HTTP
API in the same event loop, both over one pipeline, routing table and cache client.
"""

from __future__ import annotations

import logging
from typing import Literal

import grpc
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from gearshift.router.auth import KeyTable
from gearshift.router.backends import BackendPool
from gearshift.router.cache_client import CacheClient
from gearshift.router.embedding import QueryEmbedder
from gearshift.router.kube_watch import KubeRouteWatcher
from gearshift.router.openai_http import OpenAIHttpApi
from gearshift.router.pipeline import Pipeline, PipelineConfig
from gearshift.router.routing_table import RoutesFileWatcher, RoutingTable
from gearshift.router.scoring import DifficultyScorer, load_scorer
from gearshift.router.servicer import RouterServicer
from gearshift.runtime.settings import ServiceSettings
from gearshift.v1 import router_pb2, router_pb2_grpc

log = logging.getLogger(__name__)


class Settings(ServiceSettings):
    """Router settings (env prefix `GEARSHIFT_ROUTER_`, flags `--http-port` etc.)."""

    model_config = SettingsConfigDict(env_prefix="GEARSHIFT_ROUTER_", extra="ignore")

    service_name: str = "gearshift-router"
    http_port: int = Field(
        8080, ge=-1, le=65535, description="OpenAI-compatible HTTP port; 0 picks one, -1 disables."
    )
    cache_address: str = Field("", description="Cache service host:port; empty: no cache.")
    routes_file: str = Field("", description="Local YAML file of ModelRoutes (hot-reloaded).")
    kubernetes: bool = Field(False, description="Watch ModelRoutes in the cluster instead.")
    watch_namespace: str = Field(
        "", description="Namespace whose ModelRoutes are watched; empty: all namespaces."
    )
    api_keys_file: str = Field(
        "", description="YAML mapping API key -> tenant (a mounted Secret; reloaded on change)."
    )
    request_timeout_s: float = Field(
        120.0, gt=0, description="Longest a request may take (when the client sets no deadline)."
    )
    backend_timeout_s: float = Field(
        60.0, gt=0, description="Deadline of one backend call (before escalating)."
    )
    cache_timeout_s: float = Field(
        0.25, gt=0, description="Cache lookup deadline; a slower cache counts as a miss."
    )
    cascade: bool = Field(
        False,
        description="Judge each SLM answer with the escalation estimator and re-ask the "
        "large tier when it is likely not good enough.",
    )
    cascade_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Cascade: target share of SLM answers the escalation estimator sends to "
        "the large tier (calibrated on reference answers).",
    )
    cascade_threshold: float = Field(
        -1.0,
        ge=-1.0,
        le=1.0,
        description="Cascade: fixed escalation threshold in [0, 1]; -1 uses cascade_share.",
    )
    cascade_stream_chars: int = Field(
        400,
        ge=0,
        description="Cascade on streams: hold back this many characters of the SLM answer "
        "and judge them before sending any; 0 leaves streams out of the cascade.",
    )
    large_share_cap: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Upper bound on the large tier's traffic share (and its default maxShare).",
    )
    difficulty_threshold: float = Field(
        -1.0,
        ge=-1.0,
        le=1.0,
        description="Fixed difficulty threshold in [0, 1]; -1 uses the scorer's calibration.",
    )
    on_scoring_failure: Literal["slm", "llm", "refuse"] = Field(
        "slm",
        description="When the query cannot be embedded or scored: answer on the slm tier "
        "(cheap), on the llm tier (safe for quality), or refuse with UNAVAILABLE.",
    )
    drop_unsupported_params: bool = Field(
        False,
        description="OpenAI API: ignore parameters the router cannot honour (tools, "
        "response_format, penalties, ...) instead of answering 400 naming them.",
    )
    store_sampled: bool = Field(
        False, description="Also cache sampled (temperature > 0 or unset) generations."
    )
    expose_prompts_in_traces: bool = Field(
        False, description="Record question text on spans (off: prompts stay out of traces)."
    )
    health_poll_interval_s: float = Field(
        2.0, gt=0, description="How often each backend's GetModelInfo is polled."
    )
    health_poll_timeout_s: float = Field(1.0, gt=0, description="Deadline of one health poll.")
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that open a backend's breaker."
    )
    breaker_cooldown_s: float = Field(5.0, gt=0, description="How long an open breaker stays open.")

    @model_validator(mode="after")
    def _one_source(self) -> Settings:
        if self.kubernetes and self.routes_file:
            raise ValueError("set either routes_file or kubernetes, not both")
        return self


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
        self.cache = (
            CacheClient(settings.cache_address, lookup_timeout_s=settings.cache_timeout_s)
            if settings.cache_address
            else None
        )
        self.pipeline = Pipeline(
            PipelineConfig(
                request_timeout_s=settings.request_timeout_s,
                backend_timeout_s=settings.backend_timeout_s,
                cascade=settings.cascade,
                cascade_share=settings.cascade_share,
                cascade_threshold=settings.cascade_threshold,
                cascade_stream_chars=settings.cascade_stream_chars,
                large_share_cap=settings.large_share_cap,
                difficulty_threshold=settings.difficulty_threshold,
                on_scoring_failure=settings.on_scoring_failure,
                store_sampled=settings.store_sampled,
                expose_prompts_in_traces=settings.expose_prompts_in_traces,
            ),
            self.table,
            self.embedder,
            scorer or load_scorer(),
            self.cache,
        )
        self.http = (
            OpenAIHttpApi(
                self.pipeline,
                self.keys,
                settings.host,
                settings.http_port,
                drop_unsupported_params=settings.drop_unsupported_params,
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

    def register(self, server: grpc.aio.Server) -> list[str]:
        router_pb2_grpc.add_RouterServiceServicer_to_server(
            RouterServicer(self.pipeline, self.keys), server
        )
        return [router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name]

    async def start(self) -> None:
        if self.routes_watcher is not None:
            self.routes_watcher.load()
            self.routes_watcher.start()
        if self.kube_watcher is not None:
            self.kube_watcher.start()
        self.table.start()
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
        if self.cache is not None:
            await self.cache.close()
        await self.pool.close()
        await self.embedder.close()


def build_app(settings: Settings) -> RouterApp:
    return RouterApp(settings)
