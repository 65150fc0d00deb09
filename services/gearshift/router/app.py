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
from gearshift.router.cold_start import ColdStartWaiter
from gearshift.router.embedding import QueryEmbedder
from gearshift.router.kube_watch import KubeRouteWatcher
from gearshift.router.limits import InputLimits
from gearshift.router.multi.config import MultiConfig
from gearshift.router.multi.policy import MultiLimits, MultiPolicy
from gearshift.router.openai_http import OpenAIHttpApi
from gearshift.router.outcomes.wiring import Outcomes
from gearshift.router.pipeline import Pipeline, PipelineConfig
from gearshift.router.retriever_client import RetrieverClient
from gearshift.router.routing_table import RoutesFileWatcher, RoutingTable
from gearshift.router.scorer_reload import ReloadingScorer, load_scorer_file
from gearshift.router.scoring import DifficultyScorer, load_scorer
from gearshift.router.selection_tiebreak import SmallModelTieBreak
from gearshift.router.selector import DEFAULT_MARGIN, DEFAULT_THRESHOLD, Selector
from gearshift.router.servicer import RouterServicer
from gearshift.runtime.settings import MultiWorkerSettings
from gearshift.v1 import router_pb2, router_pb2_grpc

log = logging.getLogger(__name__)


class Settings(MultiWorkerSettings):
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
    cold_start_wait_s: float = Field(
        60.0,
        ge=0,
        description="How long a request naming a route scaled to zero waits for the replica "
        "it woke (bounded by the request deadline); 0 fails at once (UNAVAILABLE, ROUTE_COLD).",
    )
    health_poll_interval_s: float = Field(
        2.0, gt=0, description="How often each backend's GetModelInfo is polled."
    )
    health_poll_timeout_s: float = Field(1.0, gt=0, description="Deadline of one health poll.")
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that open a backend's breaker."
    )
    breaker_cooldown_s: float = Field(5.0, gt=0, description="How long an open breaker stays open.")
    selection_threshold: float = Field(
        DEFAULT_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="Least similarity of a question to an option's description or examples "
        "for the option (a data source) to be selected; below it, model routes decide.",
    )
    selection_margin: float = Field(
        DEFAULT_MARGIN,
        ge=0.0,
        le=1.0,
        description="Lead the best option needs over the runner-up; closer calls select nothing.",
    )
    source_timeout_s: float = Field(
        2.0, gt=0, description="Deadline of one data source search; a slower source is skipped."
    )
    source_context_chars: int = Field(
        3000,
        ge=200,
        le=100_000,
        description="Characters of retrieved passages put into a grounded prompt.",
    )
    selection_tiebreak: bool = Field(
        False,
        description="When the best options are within selection_tiebreak_window of each "
        "other, ask the small model to choose among their descriptions (falls back to the "
        "embedding choice on any failure). Off: it adds a model call to close selections.",
    )
    selection_tiebreak_window: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Score distance from the best option within which options count as "
        "close for the tie-break (at least selection_margin).",
    )
    selection_tiebreak_timeout_s: float = Field(
        2.0, gt=0, description="Deadline of the tie-break's model call; then the embedding choice."
    )
    retriever_api_key: str = Field(
        "",
        description="Key sent as `authorization: Bearer` to retrievers that check keys (a "
        "service key, tenant '*', in the retriever's api_keys_file); empty sends none.",
    )
    # Multi-routing defaults and bounds (docs/router.md "Multi-routing").
    multi_max_routes: int = Field(
        1,
        ge=1,
        le=16,
        description="Routes a request is sent to unless it says otherwise; 1 is a single route.",
    )
    multi_combine: Literal["concat", "synthesize", "best", "vote"] = Field(
        "concat", description="How the answers of a multi-route request are combined by default."
    )
    multi_min_successful: int = Field(
        1, ge=1, le=16, description="Branches that must answer by default (fewer: an error)."
    )
    multi_branch_timeout_s: float = Field(
        30.0, gt=0, description="Default deadline of one branch; a later branch is cancelled."
    )
    multi_grace_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Seconds the branches still running get once min_successful have "
        "answered; then they are cancelled (0: at once).",
    )
    multi_max_routes_limit: int = Field(
        4, ge=1, le=16, description="Most branches a request may ask for (more: 400)."
    )
    multi_margin: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Options over the selection threshold and within this much of the best "
        "option's score join a multi-route plan.",
    )
    multi_judge_tier: Literal["llm", "slm"] = Field(
        "llm", description="Tier of the judge that picks the answer for combine=best."
    )
    multi_synthesis_context_chars: int = Field(
        6000,
        ge=200,
        le=400_000,
        description="Characters of answers and passages one synthesis prompt holds; longer "
        "inputs are summarised in a tree first.",
    )
    multi_combine_reserve_s: float = Field(
        5.0,
        ge=0,
        le=600,
        description="Seconds at the end of a request kept for the combining model call "
        "(synthesize, best): branches must answer before (never more than half the time "
        "left).",
    )
    # Input limits, checked before any work (docs/router.md "Limits").
    max_body_bytes: int = Field(
        InputLimits.max_body_bytes, ge=1024, description="Largest HTTP request body (413 above)."
    )
    max_messages: int = Field(
        InputLimits.max_messages, ge=1, description="Most messages in one chat request."
    )
    max_message_chars: int = Field(
        InputLimits.max_message_chars, ge=1, description="Most characters in one message."
    )
    max_json_depth: int = Field(
        InputLimits.max_json_depth, ge=4, description="Deepest JSON nesting of an HTTP body."
    )
    max_tokens_limit: int = Field(
        InputLimits.max_tokens_limit, ge=1, description="Largest max_tokens a request may ask."
    )
    max_header_bytes: int = Field(
        InputLimits.max_header_bytes,
        ge=1024,
        description="Longest HTTP header field or request line, in bytes.",
    )
    max_headers: int = Field(
        InputLimits.max_headers, ge=16, description="Most HTTP header fields in one request."
    )

    def input_limits(self) -> InputLimits:
        return InputLimits(
            max_body_bytes=self.max_body_bytes,
            max_messages=self.max_messages,
            max_message_chars=self.max_message_chars,
            max_json_depth=self.max_json_depth,
            max_tokens_limit=self.max_tokens_limit,
            max_header_bytes=self.max_header_bytes,
            max_headers=self.max_headers,
        )

    outcomes_enabled: bool = Field(
        True, description="Record each answer's decision and accept feedback on it."
    )
    outcomes_dir: str = Field(
        "~/.local/state/gearshift/router",
        description="Where the embedded outcome store (outcomes.sqlite3) lives.",
    )
    outcomes_postgres_url: str = Field(
        "",
        description="Keep decisions and outcomes in PostgreSQL instead (shared by replicas).",
    )
    outcomes_keep_prompt_text: bool = Field(
        True,
        description="Store the question text with each decision (off: only its sha256; "
        "retraining then learns from the embedding alone).",
    )
    outcomes_unlabelled_ttl_h: float = Field(
        168.0, gt=0, description="Hours a decision without feedback is kept (feedback window)."
    )
    outcomes_retention_days: float = Field(
        0.0, ge=0, description="Days decisions with outcomes are kept; 0 keeps them."
    )
    outcomes_queue_max: int = Field(
        10_000, ge=1, description="Decisions queued for writing at most (more are dropped)."
    )
    outcomes_flush_interval_s: float = Field(
        0.5, gt=0, description="How often queued decisions are written, in one batch."
    )
    outcomes_timeout_s: float = Field(2.0, gt=0, description="Deadline of one store call.")
    scorer_weights: str = Field(
        "",
        description="Scorer weights file (.npz) to use instead of the shipped one; watched "
        "and swapped in without a restart when it changes.",
    )
    scorer_reload_interval_s: float = Field(
        2.0, gt=0, description="How often the scorer weights file is checked for changes."
    )
    shadow_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of small-model answers also answered and graded by the large "
        "tier in the background (shadow judging); 0 turns it off.",
    )
    shadow_daily_token_budget: int = Field(
        200_000, ge=0, description="Tokens shadow judging may spend per UTC day."
    )
    shadow_concurrency: int = Field(
        2, ge=1, description="Shadow judgments running at once (more are skipped)."
    )
    shadow_timeout_s: float = Field(
        60.0, gt=0, description="Deadline of each large-tier call shadow judging makes."
    )
    shadow_max_tokens: int = Field(
        512, ge=16, description="Token cap of the large tier's reference answer."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Settings:
        if self.kubernetes and self.routes_file:
            raise ValueError("set either routes_file or kubernetes, not both")
        if self.multi_max_routes > self.multi_max_routes_limit:
            raise ValueError("multi_max_routes must not exceed multi_max_routes_limit")
        if self.multi_min_successful > self.multi_max_routes:
            raise ValueError("multi_min_successful must not exceed multi_max_routes")
        return self

    def multi_config(self) -> MultiConfig:
        return MultiConfig(
            limits=MultiLimits(
                MultiPolicy(
                    max_routes=self.multi_max_routes,
                    combine=self.multi_combine,
                    min_successful=self.multi_min_successful,
                    branch_timeout_s=self.multi_branch_timeout_s,
                    grace_s=self.multi_grace_s,
                ),
                self.multi_max_routes_limit,
            ),
            margin=self.multi_margin,
            judge_tier=self.multi_judge_tier,
            synthesis_context_chars=self.multi_synthesis_context_chars,
            combine_reserve_s=self.multi_combine_reserve_s,
        )


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
                selection_threshold=settings.selection_threshold,
                selection_margin=settings.selection_margin,
                source_timeout_s=settings.source_timeout_s,
                source_context_chars=settings.source_context_chars,
            ),
            self.table,
            self.embedder,
            self.scorer,
            self.cache,
            self.selector,
            self.retriever,
            settings.multi_config(),
        )
        self.pipeline.planner.cold_start = ColdStartWaiter(self.table, settings.cold_start_wait_s)
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
