"""The per-request pipeline, shared by the gRPC servicer and the OpenAI-compatible HTTP API.

A planner decides (`planner.Planner`: validation, pin check, one embedding, cache policy
and lookup, difficulty, routes) and an executor runs the plan (`executor.Executor`: one
attempt/failover/cascade loop for unary and streaming, storing answers in the cache). This
module only joins the two for the three front-end operations.

Every step raises `GearshiftError`s; each front end maps them to its own wire format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gearshift.router.clients.cache_client import CacheClient
from gearshift.router.clients.retriever_client import RetrieverClient
from gearshift.router.core.answers import AnswerFolder
from gearshift.router.core.embedding import QueryEmbedder
from gearshift.router.core.events import AnswerObserver
from gearshift.router.core.executor import Executor
from gearshift.router.core.plan import (
    PipelineConfig,
    cascade_policy,
)
from gearshift.router.core.planner import Planner
from gearshift.router.multi.config import MultiConfig
from gearshift.router.multi.runner import MultiRouting
from gearshift.router.scorer.protocol import DifficultyScorer
from gearshift.router.selection.selector import Selector
from gearshift.router.table.routing_table import RoutingTable
from gearshift.v1 import common_pb2, router_pb2


class Pipeline:
    """Answers, streams and explains routed chat requests."""

    def __init__(
        self,
        config: PipelineConfig,
        table: RoutingTable,
        embedder: QueryEmbedder,
        scorer: DifficultyScorer,
        cache: CacheClient | None,
        selector: Selector | None = None,
        retriever: RetrieverClient | None = None,
        multi: MultiConfig | None = None,
    ) -> None:
        self.table = table
        self.cache = cache
        self.planner = Planner(config, table, embedder, scorer, cache, selector, retriever)
        self.executor = Executor(config, table, cache)
        self.multi = MultiRouting(multi or MultiConfig(), self.planner, self.executor)

    # The planner and the executor read one config; tests and tools swap parts at run time.
    @property
    def config(self) -> PipelineConfig:
        return self.planner.config

    @config.setter
    def config(self, config: PipelineConfig) -> None:
        self.planner.config = self.executor.config = config
        self.executor.cascade_policy = cascade_policy(config)
        if self.planner.selector is not None:
            self.planner.selector.threshold = config.selection_threshold
            self.planner.selector.margin = config.selection_margin

    @property
    def observers(self) -> list[AnswerObserver]:
        """Told of every generated answer (decision recording, shadow judging)."""
        return self.executor.observers

    @property
    def embedder(self) -> QueryEmbedder:
        return self.planner.embedder

    @embedder.setter
    def embedder(self, embedder: QueryEmbedder) -> None:
        self.planner.embedder = embedder

    @property
    def scorer(self) -> DifficultyScorer:
        return self.planner.scorer

    @scorer.setter
    def scorer(self, scorer: DifficultyScorer) -> None:
        self.planner.scorer = scorer

    async def chat(
        self, request: router_pb2.ChatRequest, tenant: str, time_remaining: float | None
    ) -> router_pb2.ChatResponse:
        """A whole routed answer: the executor's chunks folded into one response."""
        response = router_pb2.ChatResponse()
        answers = AnswerFolder()
        async for chunk in await self._chunks(request, tenant, time_remaining, stream=False):
            response.request_id = chunk.request_id
            if chunk.HasField("decision"):
                response.decision.CopyFrom(chunk.decision)
                response.trace_id = chunk.trace_id
            if chunk.HasField("final_decision"):
                response.decision.CopyFrom(chunk.final_decision)
            answers.add(chunk)
            if chunk.HasField("usage"):
                response.usage.CopyFrom(chunk.usage)
            response.citations.extend(chunk.citations)
        answers.fill(response)
        if not response.HasField("usage"):
            response.usage.CopyFrom(common_pb2.Usage())
        return response

    async def chat_stream(
        self, request: router_pb2.ChatRequest, tenant: str, time_remaining: float | None
    ) -> AsyncIterator[router_pb2.ChatStreamChunk]:
        """Streams a routed answer; the first chunk carries the decision and the trace id."""
        async for chunk in await self._chunks(request, tenant, time_remaining, stream=True):
            yield chunk

    async def _chunks(
        self,
        request: router_pb2.ChatRequest,
        tenant: str,
        time_remaining: float | None,
        *,
        stream: bool,
    ) -> AsyncIterator[router_pb2.ChatStreamChunk]:
        """The planned request's chunks: one route's (the executor) or several (multi)."""
        policy = self.multi.policy(request)
        if policy.multi:
            multi = await self.multi.plan(request, tenant, time_remaining, policy)
            multi.base.stream = stream
            return self.multi.run(multi)
        plan = await self.planner.plan(request, tenant, time_remaining)
        plan.stream = stream
        return self.executor.run(plan)

    async def route(
        self, request: router_pb2.ChatRequest, tenant: str, time_remaining: float | None
    ) -> router_pb2.RouteDecision:
        """The decision `chat` would make, without generating or storing anything."""
        policy = self.multi.policy(request)
        if policy.multi:
            multi = await self.multi.plan(request, tenant, time_remaining, policy, dry_run=True)
            return multi.base.decision
        plan = await self.planner.plan(request, tenant, time_remaining, dry_run=True)
        return plan.decision
