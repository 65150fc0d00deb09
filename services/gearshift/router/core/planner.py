"""The planner: decides how one request is answered, before any backend is called.

validate -> (pin check) -> embed once -> select an option by metadata -> (a source: search
it and ground the prompt) -> cache lookup -> score -> choose routes. The result
is a `Plan`; the executor runs it. The planner never generates text.

The steps multi-routing reuses are public (`pinned_route`, `select`, `retrieve`, `choose`,
`failover_chain`); the cache step lives in caching.py, shared with multi-routing.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import MutableSequence, Sequence

import grpc
from opentelemetry import trace

from gearshift.router import metrics
from gearshift.router.clients.cache_client import CacheClient
from gearshift.router.clients.retriever_client import RetrieverClient
from gearshift.router.core import caching, capabilities, request_options
from gearshift.router.core.context_digest import (
    question_text,
)
from gearshift.router.core.embedding import QueryEmbedder
from gearshift.router.core.grounding import citations, grounded_messages, used_passages
from gearshift.router.core.plan import AUTO_MODELS, AUTO_SCOPE, PipelineConfig, Plan, set_route
from gearshift.router.scorer.protocol import DifficultyScorer
from gearshift.router.selection.selector import Selector
from gearshift.router.table.cold_start import ColdStartWaiter
from gearshift.router.table.routing_table import Route, RoutingTable, Snapshot, Source
from gearshift.runtime.errors import FieldViolation, NotFound, Unavailable
from gearshift.runtime.ids import new_request_id
from gearshift.runtime.validation import require_valid_chat
from gearshift.v1 import common_pb2, router_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class Planner:
    """Turns a chat request into a `Plan`."""

    def __init__(
        self,
        config: PipelineConfig,
        table: RoutingTable,
        embedder: QueryEmbedder,
        scorer: DifficultyScorer,
        cache: CacheClient | None,
        selector: Selector | None = None,
        retriever: RetrieverClient | None = None,
    ) -> None:
        self.config = config
        self.table = table
        self.embedder = embedder
        self.scorer = scorer
        self.cache = cache
        self.selector = selector
        self.retriever = retriever
        # Set by the app: holds pinned requests for a route woken from zero replicas.
        self.cold_start: ColdStartWaiter | None = None

    async def plan(
        self,
        request: router_pb2.ChatRequest,
        tenant: str,
        time_remaining: float | None,
        *,
        dry_run: bool = False,
        cache: bool = True,
    ) -> Plan:
        """Validates, looks the question up in the cache and picks the routes to try.

        `cache=False` leaves the cache to the caller (multi-routing looks up under its own
        scope once the branches are known).
        """
        messages = list(request.messages)
        extra = request_options.schema_violations(request)
        if messages and messages[-1].role not in ("user", "tool"):
            extra.append(
                FieldViolation(
                    f"messages[{len(messages) - 1}].role",
                    "the last message must be from the user (or a tool result)",
                )
            )
        require_valid_chat(
            messages,
            request.sampling,
            extra=extra,
            tools=request.tools,
            tool_choice=request.tool_choice,
        )
        budget = self.config.request_timeout_s
        if time_remaining is not None:
            budget = min(budget, time_remaining)
        snapshot = self.table.snapshot
        plan = Plan(
            request_id=request.request_id or new_request_id(),
            tenant=tenant,
            messages=messages,
            sampling=request.sampling,
            decision=router_pb2.RouteDecision(),
            deadline=time.monotonic() + budget,
            question=question_text(messages),
            extras=request_options.generate_extras(request),
            cascade_ok=request_options.cascade_allowed(request),
        )
        needs = capabilities.needs_of(request)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("gearshift.tenant", tenant)
            span.set_attribute("gearshift.request_id", plan.request_id)
            if self.config.expose_prompts_in_traces:
                span.set_attribute("gearshift.question", plan.question)

        pinned_route: Route | None = None
        pinned_source: Source | None = None
        if request.model not in AUTO_MODELS:
            pinned_source = snapshot.source(request.model)
            if pinned_source is None:
                pinned_route = self.pinned_route(request.model, snapshot)
                if pinned_route is None:  # cold: woken just now
                    assert self.cold_start is not None
                    # A dry run (route explain) says so at once instead of waiting.
                    budget = 0.0 if dry_run else plan.remaining()
                    pinned_route = await self.cold_start.wait(request.model, budget)
                capabilities.require(pinned_route, needs)
                plan.pinned = True
        if pinned_route is None:  # only routes that can serve what the request asks
            snapshot = capabilities.capable_snapshot(snapshot, needs, plan.decision)

        lookup, plan.store = (
            caching.cache_policy(self.cache, self.config, request, plan)
            if cache
            else (False, False)
        )
        if lookup or plan.store or pinned_route is None:
            try:
                plan.embedding = await self.embedder.embed(plan.question)
            except Exception as exc:  # a broken embedder must not take the router down
                self._scoring_failed(plan, "embedding", exc)
                lookup = plan.store = False
                plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
        selected_route: Route | None = None
        if pinned_source is not None:
            plan.source, plan.source_pinned = pinned_source, True
            plan.decision.reasons.append(f"source pinned by the request: {pinned_source.name}")
        elif pinned_route is None:
            plan.source, selected_route = await self.select(plan, snapshot)
        if plan.source is not None:
            if dry_run:
                plan.decision.source = plan.source.name
            else:
                await self.retrieve(plan, plan.source)
        scope = pinned_route.name if pinned_route else AUTO_SCOPE
        if plan.source is not None and not dry_run:
            # Answers drawn from a source are cached per content version of that source:
            # re-ingesting changes the version and so invalidates them.
            scope = f"source/{plan.source.name}@{plan.decision.source_content_version}"
        if lookup or plan.store:
            plan.scope = caching.cache_scope(tenant, scope, messages, request.sampling)
        if lookup and self.cache is not None and plan.scope is not None:
            if await caching.lookup(self.cache, plan):
                assert plan.hit is not None
                d = plan.decision
                d.route, d.tier, d.model = "cache", common_pb2.TIER_CACHE, plan.hit.entry.model
                self._annotate(span, plan)
                if not dry_run:
                    return plan
                # A dry run still shows where the request would have gone on a miss.
        if selected_route is not None:
            plan.routes = self.failover_chain(selected_route, snapshot)
            set_route(plan.decision, selected_route)
        else:
            self.choose(plan, snapshot, pinned_route)
        if not dry_run:  # the id feedback refers to (only generated answers are recorded)
            plan.decision.response_id = new_request_id()
        if plan.hit is not None:  # dry run on a hit: the cache answers, the score is informative
            d = plan.decision
            d.route, d.tier, d.model = "cache", common_pb2.TIER_CACHE, plan.hit.entry.model
        self._annotate(span, plan)
        return plan

    def pinned_route(self, name: str, snapshot: Snapshot) -> Route | None:
        """The route a request names; None for a cold route it just woke (and may wait for).

        NOT_FOUND for an unknown name; UNAVAILABLE (ROUTE_COLD) for a cold route when
        there is no waiter.
        """
        route = snapshot.find(name)
        if route is not None:
            return route
        if self.table.wake(name=name):
            if self.cold_start is not None:
                return None
            raise Unavailable(
                f"route {name!r} is scaled to zero and is being started; "
                "retry shortly, or send the request with model 'auto'",
                reason="ROUTE_COLD",
            )
        known = ", ".join(
            ["auto", *(r.name for r in snapshot.routes), *(s.name for s in snapshot.sources)]
        )
        raise NotFound(f"unknown model {name!r}; use one of: {known}", reason="UNKNOWN_MODEL")

    async def select(self, plan: Plan, snapshot: Snapshot) -> tuple[Source | None, Route | None]:
        """The source (or described model route) the question's metadata match selects."""
        d = plan.decision
        if self.selector is None or not (
            snapshot.sources or any(r.description for r in snapshot.routes)
        ):
            return None, None
        if not plan.embedding:
            d.selection_reason = "selection skipped: the question has no embedding"
            return None, None
        with tracer.start_as_current_span("router.select") as span:
            selection = await self.selector.select(
                snapshot, plan.embedding, plan.question, plan.remaining()
            )
            span.set_attribute("gearshift.selection", selection.reason)
        for c in selection.candidates:
            d.candidates.add(
                name=c.name,
                kind=c.kind,
                score=c.score,
                similarity=c.similarity,
                exclude_similarity=c.exclude_similarity,
                matched=c.matched,
            )
        d.selection_reason = selection.reason
        d.reasons.append(selection.reason)
        chosen = selection.chosen
        if chosen is None:
            return None, None
        if chosen.kind == "source":
            source = snapshot.source(chosen.name)
            if source is not None and not self.table.source_usable(source):
                d.reasons.append(f"skipped source {source.name}: retriever breaker open")
                return None, None
            return source, None
        route = snapshot.by_name.get(chosen.name)
        if route is not None and not self.table.route_usable(route):
            d.reasons.append(f"skipped {route.name}: {self.table.why_unusable(route)}")
            return None, None
        return None, route

    async def retrieve(self, plan: Plan, source: Source) -> None:
        """Searches the source and grounds the prompt; a failure skips it (pinned: fails)."""
        d = plan.decision
        try:
            with tracer.start_as_current_span("router.retrieve") as span:
                span.set_attribute("gearshift.source", source.name)
                if self.retriever is None:
                    raise RuntimeError("no retriever client")
                found = await self.retriever.search(
                    source, plan.question, plan.embedding, plan.remaining()
                )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            why = f"{code.name}: {exc.details() or ''}".rstrip(": ")
            if code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                self.table.record_source_result(source, why)
            self._source_failed(plan, source, why)
            return
        self.table.record_source_result(source)
        passages = used_passages(found.passages, self.config.source_context_chars)
        if not passages:
            self._source_failed(plan, source, "no passages found")
            return
        plan.passages = passages
        plan.citations = citations(passages)
        plan.messages = grounded_messages(
            source.name, passages, plan.messages, self.config.source_context_chars
        )
        d.source = source.name
        d.source_content_version = found.content_version
        d.reasons.append(
            f"answering from source {source.name}: {len(passages)} passages "
            f"(best {passages[0].document_id}, score {passages[0].score:.3f})"
        )

    def _source_failed(self, plan: Plan, source: Source, why: str) -> None:
        metrics.SOURCE_FAILURES.labels(source.name).inc()
        if plan.source_pinned:
            raise Unavailable(
                f"data source {source.name!r} could not be searched ({why})",
                reason="SOURCE_UNAVAILABLE",
            )
        log.warning("request %s: source %s skipped: %s", plan.request_id, source.name, why)
        plan.decision.reasons.append(f"skipped source {source.name} ({why}): model routes decide")
        plan.source = None

    def large_share(self, snapshot: Snapshot) -> float:
        """The share of traffic the large tier may get: its routes' maxShare, capped."""
        shares = [r.max_share for r in snapshot.tier("llm") if r.max_share is not None]
        share = min(shares) if shares else self.config.large_share_cap
        return min(share, self.config.large_share_cap)

    def choose(self, plan: Plan, snapshot: Snapshot, pinned: Route | None) -> None:
        d = plan.decision
        if pinned is not None:
            plan.routes = [pinned]
            d.reasons.append(f"model pinned by the request: route {pinned.name}")
            set_route(d, pinned)
            return
        if not snapshot.routes:
            raise Unavailable("no routes configured", reason="NO_ROUTES")
        share = self.large_share(snapshot)
        scored = self._score(plan, share)
        slm, llm = snapshot.tier("slm"), snapshot.tier("llm")
        if scored is None:
            policy = self.config.on_scoring_failure
            if policy == "refuse":
                raise Unavailable(
                    f"the query could not be scored ({plan.scoring_error}) and "
                    "on_scoring_failure is 'refuse'",
                    reason="SCORING_FAILED",
                )
            # Unknown difficulty: the lowest band of the slm tier or the highest of llm.
            difficulty, threshold = (0.0, 1.0) if policy == "slm" else (1.0, 0.0)
            d.reasons.append(f"difficulty unknown ({plan.scoring_error}): {policy} tier")
        else:
            difficulty, threshold = scored
            d.difficulty, d.threshold = difficulty, threshold
        if self.table.cold:  # scaled-to-zero routes of the tier this request wants: wake them
            for name in self.table.wake(tier="llm" if difficulty >= threshold else "slm"):
                d.reasons.append(f"{name} is scaled to zero: asked the operator to start it")
        if not llm:
            wanted = "slm"
            d.reasons.append("no llm routes: slm tier")
        elif not slm:
            wanted = "llm"
            d.reasons.append("no slm routes: llm tier")
        elif difficulty >= threshold:
            wanted = "llm"
            if scored is not None:
                d.reasons.append(
                    f"difficulty {difficulty:.3f} >= threshold {threshold:.3f} "
                    f"(large-tier share {share:.0%}): llm tier"
                )
        else:
            wanted = "slm"
            if scored is not None:
                d.reasons.append(
                    f"difficulty {difficulty:.3f} < threshold {threshold:.3f}: slm tier"
                )
        order = [wanted, "llm"] if wanted == "slm" else ["llm", "slm"]
        chosen: Route | None = None
        for tier in order:
            chosen = self._pick_in_tier(snapshot.tier(tier), difficulty, d.reasons)
            if chosen is not None:
                if tier != wanted:
                    d.reasons.append(f"no usable {wanted} route: {tier} tier instead")
                break
        if chosen is None:
            # Health may be stale: try the preferred routes anyway rather than fail outright.
            candidates = snapshot.tier(wanted) or list(snapshot.routes)
            chosen = candidates[0]
            d.reasons.append(f"no usable route; trying {chosen.name} anyway")
        plan.routes = self.failover_chain(chosen, snapshot)
        set_route(d, chosen)

    def _score(self, plan: Plan, share: float) -> tuple[float, float] | None:
        """(difficulty, threshold), or None when the query could not be scored."""
        if plan.scoring_error:
            return None
        try:
            with tracer.start_as_current_span("router.score"):
                difficulty = self.scorer.score(plan.embedding, plan.question)
                if 0.0 <= self.config.difficulty_threshold <= 1.0:
                    threshold = self.config.difficulty_threshold
                else:
                    threshold = self.scorer.threshold_for_share(share)
        except Exception as exc:  # as for the embedder: route by policy instead of failing
            self._scoring_failed(plan, "scoring", exc)
            return None
        return difficulty, threshold

    def _scoring_failed(self, plan: Plan, stage: str, exc: Exception) -> None:
        log.warning("%s failed, routing by on_scoring_failure: %r", stage, exc, exc_info=exc)
        metrics.SCORING_FAILURES.labels(stage).inc()
        plan.scoring_error = f"{stage} failed: {type(exc).__name__}"
        if stage == "embedding":
            plan.decision.reasons.append(f"{plan.scoring_error}; cache skipped")

    def _pick_in_tier(
        self, routes: Sequence[Route], difficulty: float, reasons: MutableSequence[str]
    ) -> Route | None:
        usable = []
        for route in routes:
            if self.table.route_usable(route):
                usable.append(route)
            else:
                reasons.append(f"skipped {route.name}: {self.table.why_unusable(route)}")
        if not usable:
            return None
        banded = [r for r in usable if r.accepts(difficulty)] or usable
        best = min(r.priority for r in banded)
        tied = [r for r in banded if r.priority == best]
        weights = [max(r.weight, 0) for r in tied]
        if sum(weights) <= 0:
            return tied[0]
        return random.choices(tied, weights=weights, k=1)[0]

    def failover_chain(self, chosen: Route, snapshot: Snapshot) -> list[Route]:
        """chosen, then its fallback chain, then the usable llm routes by priority."""
        chain = [chosen]
        seen = {chosen.name}
        current: Route | None = chosen
        while current is not None and current.fallback:
            current = snapshot.by_name.get(current.fallback)
            if current is None or current.name in seen:
                break
            chain.append(current)
            seen.add(current.name)
        for route in snapshot.tier("llm"):
            if route.name not in seen and self.table.route_usable(route):
                chain.append(route)
                seen.add(route.name)
        return chain

    @staticmethod
    def _annotate(span: trace.Span, plan: Plan) -> None:
        if not span.is_recording():
            return
        d = plan.decision
        span.set_attribute("gearshift.route", d.route)
        span.set_attribute("gearshift.tier", common_pb2.Tier.Name(d.tier))
        span.set_attribute("gearshift.cache", common_pb2.CacheOutcome.Name(d.cache))
        span.set_attribute("gearshift.difficulty", d.difficulty)
        if d.source:
            span.set_attribute("gearshift.source", d.source)
        if d.selection_reason:
            span.set_attribute("gearshift.selection", d.selection_reason)
        if d.candidates:
            span.set_attribute(
                "gearshift.candidates", [f"{c.name}={c.score:.3f}" for c in d.candidates]
            )
