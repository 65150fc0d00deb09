"""What the planner decides and the executor runs: the `Plan` of one request.

The plan is the only thing the two halves share, so every decision (routes to try, cache
scope, whether to store) is written here before a backend is called. A plan holds one
ordered list of routes today; several routes per query (multi-routing) will add branches
beside it rather than change how one branch is run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gearshift.router.cascade.policy import EscalationPolicy
from gearshift.router.selection.selector import DEFAULT_MARGIN, DEFAULT_THRESHOLD
from gearshift.router.table.routing_table import Route, Source
from gearshift.v1 import cache_pb2, common_pb2, inference_pb2, retriever_pb2, router_pb2

AUTO_MODELS = frozenset({"", "auto"})
AUTO_SCOPE = "auto"
TIER_ENUM = {"slm": common_pb2.TIER_SLM, "llm": common_pb2.TIER_LLM}


@dataclass(frozen=True)
class PipelineConfig:
    """The settings the planner and the executor read (a subset of the router's Settings)."""

    request_timeout_s: float = 120.0
    backend_timeout_s: float = 60.0
    cascade: bool = False
    cascade_share: float = 0.2  # target share of slm answers the cascade sends up
    cascade_threshold: float = -1.0  # in [0, 1]: fixed `escalate` threshold instead
    cascade_stream_chars: int = 400  # streams: judge the slm answer on this much text
    large_share_cap: float = 0.3
    difficulty_threshold: float = -1.0  # in [0, 1]: fixed threshold instead of the calibration
    on_scoring_failure: str = "slm"  # "slm", "llm" or "refuse"
    store_sampled: bool = False
    expose_prompts_in_traces: bool = False
    selection_threshold: float = DEFAULT_THRESHOLD
    selection_margin: float = DEFAULT_MARGIN
    source_timeout_s: float = 2.0
    source_context_chars: int = 3000
    source_answer: str = "generate"  # "generate", "quote" or "verify" (core/quoting.py)
    source_support_min: float = 0.8  # verify: least support that keeps the model's answer


def cascade_policy(config: PipelineConfig) -> EscalationPolicy | None:
    """The router's cascade policy, or None when the cascade is off."""
    if not config.cascade:
        return None
    return EscalationPolicy(config.cascade_share, config.cascade_threshold)


def set_route(d: router_pb2.RouteDecision, route: Route) -> None:
    """Names the route in the decision (the planner's choice, later the one that answered)."""
    d.route, d.tier, d.model = route.name, TIER_ENUM[route.tier], route.model


@dataclass
class Plan:
    """Everything decided before generation."""

    request_id: str
    tenant: str
    messages: list[common_pb2.ChatMessage]
    sampling: common_pb2.SamplingParams
    decision: router_pb2.RouteDecision
    routes: list[Route] = field(default_factory=list)
    pinned: bool = False
    scope: cache_pb2.CacheScope | None = None
    question: str = ""
    embedding: list[float] = field(default_factory=list)
    scoring_error: str = ""  # why the query could not be embedded or scored, if it could not
    store: bool = False
    hit: cache_pb2.LookupResponse | None = None
    deadline: float = 0.0  # monotonic
    started: float = field(default_factory=time.monotonic)
    stream: bool = False
    # Answering from a data source: the source, and the passages the prompt is grounded in.
    source: Source | None = None
    source_pinned: bool = False
    passages: list[retriever_pb2.Passage] = field(default_factory=list)
    citations: list[router_pb2.Citation] = field(default_factory=list)
    # OpenAI options beyond sampling (request_options.py): what every backend call carries
    # besides messages and sampling, and whether the small-model cascade may judge the answer.
    extras: inference_pb2.GenerateRequest = field(default_factory=inference_pb2.GenerateRequest)
    cascade_ok: bool = True

    def remaining(self) -> float:
        return self.deadline - time.monotonic()
