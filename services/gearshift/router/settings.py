"""The router's settings: env vars `GEARSHIFT_ROUTER_*` and `gearshift serve router` flags.

Kept apart from the wiring (app.py re-exports `Settings`, as the cache, retriever and SLM
services do), so that parts built from settings (outcomes/wiring.py) need not import the
app that builds them. `pipeline_config()`, `multi_config()` and `input_limits()` hand each
part the slice it reads.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from gearshift.router.core.plan import PipelineConfig
from gearshift.router.limits import InputLimits
from gearshift.router.multi.config import MultiConfig
from gearshift.router.multi.policy import MultiLimits, MultiPolicy
from gearshift.router.selection.selector import DEFAULT_MARGIN, DEFAULT_THRESHOLD
from gearshift.runtime.settings import MultiWorkerSettings


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
    cold_start_wait_s: float | None = Field(
        None,
        ge=0,
        description="How long a request naming a route scaled to zero waits for the replica "
        "it woke (bounded by the request deadline); unset: the route's "
        "lifecycle.startupSeconds plus cold_start_margin_s; 0 fails at once (UNAVAILABLE, "
        "ROUTE_COLD).",
    )
    cold_start_margin_s: float = Field(
        180.0,
        ge=0,
        description="Added to a route's startupSeconds for the cold hold (unset "
        "cold_start_wait_s): scheduling, a GPU node joining, the image pull and the weights "
        "fetch come before the engine loads.",
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
    source_answer: Literal["generate", "quote", "verify"] = Field(
        "generate",
        description="How an answer from a data source is made: 'generate' (the model writes "
        "it from the passages), 'quote' (no model call: the best passage's lines that match "
        "the question, cited [1]), 'verify' (the model writes it, and it is served only when "
        "the passages support it, source_support_min, else the quote; streams arrive whole).",
    )
    source_support_min: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="With source_answer 'verify': the least share of the answer's content "
        "words found in its passages for the model's answer to be served.",
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

    def pipeline_config(self) -> PipelineConfig:
        """What the planner and the executor read: the `PipelineConfig` fields, by name."""
        return PipelineConfig(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(PipelineConfig)}
        )

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
