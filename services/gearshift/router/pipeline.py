"""The per-request pipeline, shared by the gRPC servicer and the OpenAI-compatible HTTP API.

validate -> (pin check) -> embed once -> cache lookup -> score -> plan routes -> call the
backend with a deadline, escalating on failure (and optionally cascading on low
confidence) -> store the answer in the background -> respond with the decision.

Every step raises `GearshiftError`s; each front end maps them to its own wire format.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterator, MutableSequence, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from opentelemetry import trace

from gearshift.router import metrics
from gearshift.router.cache_client import CacheClient
from gearshift.router.context_digest import (
    context_digest,
    effective_temperature,
    is_sampled,
    question_text,
)
from gearshift.router.embedding import QueryEmbedder
from gearshift.router.escalation_policy import EscalationPolicy
from gearshift.router.routing_table import Route, RoutingTable, Snapshot
from gearshift.router.scoring import DifficultyScorer
from gearshift.runtime.errors import (
    DeadlineExceeded,
    FieldViolation,
    GearshiftError,
    NotFound,
    Unavailable,
)
from gearshift.runtime.genai import model_span, record_response
from gearshift.runtime.telemetry import current_trace_id
from gearshift.runtime.validation import require_valid_chat
from gearshift.v1 import cache_pb2, common_pb2, inference_pb2, router_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# Backend failures after which the request moves on to the next route up.
ESCALATE_ON = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
AUTO_MODELS = frozenset({"", "auto"})
AUTO_SCOPE = "auto"
TIER_ENUM = {"slm": common_pb2.TIER_SLM, "llm": common_pb2.TIER_LLM}


@dataclass(frozen=True)
class PipelineConfig:
    """The settings the pipeline reads (a subset of the router's Settings)."""

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


class CascadeEscalation(Exception):
    """The escalation estimator sent a streamed small-model answer to the large tier."""


class BackendError(GearshiftError):
    """A backend's non-retryable error, passed on with its status code."""

    def __init__(self, exc: grpc.aio.AioRpcError) -> None:
        super().__init__(exc.details() or exc.code().name, exc.code().name, code=exc.code())


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

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def add_usage(total: common_pb2.Usage, more: common_pb2.Usage) -> None:
    total.prompt_tokens += more.prompt_tokens
    total.completion_tokens += more.completion_tokens
    total.total_tokens += more.total_tokens
    total.cost_usd += more.cost_usd


class Pipeline:
    """Answers, streams and explains routed chat requests."""

    def __init__(
        self,
        config: PipelineConfig,
        table: RoutingTable,
        embedder: QueryEmbedder,
        scorer: DifficultyScorer,
        cache: CacheClient | None,
    ) -> None:
        self.config = config
        self.table = table
        self.embedder = embedder
        self.scorer = scorer
        self.cache = cache
        self.escalation = (
            EscalationPolicy(config.cascade_share, config.cascade_threshold)
            if config.cascade
            else None
        )

    # --- planning --------------------------------------------------------------------------
    async def plan(
        self,
        request: router_pb2.ChatRequest,
        tenant: str,
        time_remaining: float | None,
        *,
        dry_run: bool = False,
    ) -> Plan:
        """Validates, looks the question up in the cache and picks the routes to try."""
        messages = list(request.messages)
        extra = []
        if messages and messages[-1].role != "user":
            extra.append(
                FieldViolation(
                    f"messages[{len(messages) - 1}].role", "the last message must be from the user"
                )
            )
        require_valid_chat(messages, request.sampling, extra=extra)
        budget = self.config.request_timeout_s
        if time_remaining is not None:
            budget = min(budget, time_remaining)
        snapshot = self.table.snapshot
        plan = Plan(
            request_id=request.request_id or uuid.uuid4().hex,
            tenant=tenant,
            messages=messages,
            sampling=request.sampling,
            decision=router_pb2.RouteDecision(),
            deadline=time.monotonic() + budget,
            question=question_text(messages),
        )
        span = trace.get_current_span()
        span.set_attribute("gearshift.tenant", tenant)
        span.set_attribute("gearshift.request_id", plan.request_id)
        if self.config.expose_prompts_in_traces:
            span.set_attribute("gearshift.question", plan.question)

        pinned_route: Route | None = None
        if request.model not in AUTO_MODELS:
            pinned_route = snapshot.find(request.model)
            if pinned_route is None and self.table.wake(name=request.model):
                raise Unavailable(
                    f"route {request.model!r} is scaled to zero and is being started; "
                    "retry shortly, or send the request with model 'auto'",
                    reason="ROUTE_COLD",
                )
            if pinned_route is None:
                known = ", ".join(["auto", *(r.name for r in snapshot.routes)])
                raise NotFound(
                    f"unknown model {request.model!r}; use one of: {known}", reason="UNKNOWN_MODEL"
                )
            plan.pinned = True

        lookup, plan.store = self._cache_policy(request, plan)
        if lookup or plan.store or pinned_route is None:
            try:
                plan.embedding = await self.embedder.embed(plan.question)
            except Exception as exc:  # a broken embedder must not take the router down
                self._scoring_failed(plan, "embedding", exc)
                lookup = plan.store = False
                plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
        if lookup or plan.store:
            plan.scope = cache_pb2.CacheScope(
                tenant=tenant,
                scope=pinned_route.name if pinned_route else AUTO_SCOPE,
                context_digest=context_digest(messages, request.sampling),
            )
        if lookup and self.cache is not None and plan.scope is not None:
            found = await self.cache.lookup(plan.scope, plan.question, plan.embedding)
            plan.decision.cache = found.outcome
            if found.outcome in (
                common_pb2.CACHE_OUTCOME_HIT_EXACT,
                common_pb2.CACHE_OUTCOME_HIT_SEMANTIC,
            ):
                plan.hit = found
                plan.store = False
                d = plan.decision
                d.route, d.tier, d.model = "cache", common_pb2.TIER_CACHE, found.entry.model
                d.cache_similarity = found.similarity
                d.reasons.append(f"cache hit (similarity {found.similarity:.3f})")
                self._annotate(span, plan)
                if not dry_run:
                    return plan
                # A dry run still shows where the request would have gone on a miss.
        self._choose(plan, snapshot, pinned_route)
        if plan.hit is not None:  # dry run on a hit: the cache answers, the score is informative
            d = plan.decision
            d.route, d.tier, d.model = "cache", common_pb2.TIER_CACHE, plan.hit.entry.model
        self._annotate(span, plan)
        return plan

    def _cache_policy(self, request: router_pb2.ChatRequest, plan: Plan) -> tuple[bool, bool]:
        """(look up?, store?) from the caller's policy, the sampling settings and config."""
        policy = request.cache_policy
        reasons = plan.decision.reasons
        if self.cache is None:
            plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
            return False, False
        if policy == router_pb2.CACHE_POLICY_BYPASS:
            plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
            reasons.append("cache bypassed by the caller")
            return False, False
        if is_sampled(request.sampling) and not self.config.store_sampled:
            plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
            temperature = effective_temperature(request.sampling)
            reasons.append(f"cache bypassed: sampled generation (temperature {temperature:g})")
            return False, False
        lookup = policy in (router_pb2.CACHE_POLICY_UNSPECIFIED, router_pb2.CACHE_POLICY_NO_STORE)
        store = policy in (router_pb2.CACHE_POLICY_UNSPECIFIED, router_pb2.CACHE_POLICY_REFRESH)
        if not lookup:
            plan.decision.cache = common_pb2.CACHE_OUTCOME_BYPASS
            reasons.append("cache lookup skipped (refresh)")
        return lookup, store

    def large_share(self, snapshot: Snapshot) -> float:
        """The share of traffic the large tier may get: its routes' maxShare, capped."""
        shares = [r.max_share for r in snapshot.tier("llm") if r.max_share is not None]
        share = min(shares) if shares else self.config.large_share_cap
        return min(share, self.config.large_share_cap)

    def _choose(self, plan: Plan, snapshot: Snapshot, pinned: Route | None) -> None:
        d = plan.decision
        if pinned is not None:
            plan.routes = [pinned]
            d.reasons.append(f"model pinned by the request: route {pinned.name}")
            self._set_route(d, pinned)
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
        plan.routes = self._escalation_chain(chosen, snapshot)
        self._set_route(d, chosen)

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

    def _escalation_chain(self, chosen: Route, snapshot: Snapshot) -> list[Route]:
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
    def _set_route(d: router_pb2.RouteDecision, route: Route) -> None:
        d.route, d.tier, d.model = route.name, TIER_ENUM[route.tier], route.model

    @staticmethod
    def _annotate(span: trace.Span, plan: Plan) -> None:
        d = plan.decision
        span.set_attribute("gearshift.route", d.route)
        span.set_attribute("gearshift.tier", common_pb2.Tier.Name(d.tier))
        span.set_attribute("gearshift.cache", common_pb2.CacheOutcome.Name(d.cache))
        span.set_attribute("gearshift.difficulty", d.difficulty)

    # --- generation ------------------------------------------------------------------------
    def _generate_request(
        self, plan: Plan, route: Route, want_logprobs: bool
    ) -> inference_pb2.GenerateRequest:
        sampling = common_pb2.SamplingParams()
        sampling.CopyFrom(plan.sampling)
        if want_logprobs:
            sampling.logprobs = True
        return inference_pb2.GenerateRequest(
            request_id=plan.request_id,
            tenant=plan.tenant,
            model=route.model,
            messages=plan.messages,
            sampling=sampling,
        )

    def _attempt_timeout(self, plan: Plan) -> float:
        remaining = plan.remaining()
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline expired before a backend answered")
        return min(remaining, self.config.backend_timeout_s)

    def _escalate(self, plan: Plan, route: Route, endpoint: str, why: str) -> None:
        metrics.ESCALATIONS.labels(route.name, why).inc()
        self.table.record_failure(endpoint, why)
        plan.decision.escalated_from.append(route.name)
        plan.decision.reasons.append(f"{route.name} failed ({why}): escalating")
        log.warning("request %s: route %s failed (%s)", plan.request_id, route.name, why)

    def _fail_all(self, plan: Plan) -> GearshiftError:
        if plan.remaining() <= 0:
            metrics.FAILURES.labels("deadline").inc()
            return DeadlineExceeded("the request's deadline expired before a backend answered")
        tried = ", ".join(plan.decision.escalated_from) or "none"
        metrics.FAILURES.labels("all_routes_failed").inc()
        return Unavailable(f"no backend could answer (tried: {tried})", reason="ALL_ROUTES_FAILED")

    def _cascade_wanted(self, plan: Plan, index: int) -> bool:
        route = plan.routes[index]
        return (
            self.config.cascade
            and not plan.pinned
            and route.tier == "slm"
            and any(r.tier == "llm" for r in plan.routes[index + 1 :])
        )

    def _cascades(
        self,
        plan: Plan,
        route: Route,
        answer: str,
        finish: common_pb2.FinishReason.ValueType,
        logprobs: Sequence[common_pb2.TokenLogprob] = (),
    ) -> bool:
        """The escalation estimator's verdict on a small-model answer (the cascade hook)."""
        if self.escalation is None:
            return False
        verdict = self.escalation.judge(plan.question, answer, finish, logprobs)
        plan.decision.reasons.append(verdict.reason(route.name))
        if verdict.escalate:
            metrics.ESCALATIONS.labels(route.name, "cascade").inc()
            plan.decision.escalated_from.append(route.name)
        return verdict.escalate

    async def chat(
        self, request: router_pb2.ChatRequest, tenant: str, time_remaining: float | None
    ) -> router_pb2.ChatResponse:
        """A whole routed answer."""
        plan = await self.plan(request, tenant, time_remaining)
        trace_id = current_trace_id()
        if plan.hit is not None:
            self._served_from_cache(plan)
            return router_pb2.ChatResponse(
                request_id=plan.request_id,
                text=plan.hit.entry.answer,
                finish_reason=common_pb2.FINISH_REASON_STOP,
                usage=common_pb2.Usage(),
                decision=plan.decision,
                trace_id=trace_id,
            )
        usage = common_pb2.Usage()
        index = 0
        while index < len(plan.routes):
            route = plan.routes[index]
            cascade = self._cascade_wanted(plan, index)
            endpoint = self.table.pick_endpoint(route)
            greq = self._generate_request(plan, route, want_logprobs=cascade)
            timeout = self._attempt_timeout(plan)
            try:
                with self.table.lease(endpoint), self._model_span(route, plan) as span:
                    response = await self.table.pool.stub(endpoint).Generate(greq, timeout=timeout)
                    record_response(
                        span,
                        model=response.model or route.model,
                        usage=response.usage,
                        finish_reason=response.finish_reason,
                    )
            except grpc.aio.AioRpcError as exc:
                if plan.pinned or exc.code() not in ESCALATE_ON:
                    if exc.code() in ESCALATE_ON:
                        self.table.record_failure(endpoint, exc.code().name)
                    raise BackendError(exc) from None
                self._escalate(plan, route, endpoint, exc.code().name)
                index += 1
                continue
            self.table.record_success(endpoint)
            add_usage(usage, response.usage)
            if response.finish_reason == common_pb2.FINISH_REASON_ERROR and not plan.pinned:
                self._escalate(plan, route, endpoint, "finish reason ERROR")
                index += 1
                continue
            if cascade and self._cascades(
                plan, route, response.text, response.finish_reason, response.logprobs
            ):
                index = next(
                    i for i in range(index + 1, len(plan.routes)) if plan.routes[i].tier == "llm"
                )
                continue
            self._answered(plan, route)
            metrics.record_usage(plan.tenant, plan.decision.tier, usage)
            self._store(
                plan,
                response.text,
                response.model or route.model,
                response.finish_reason,
                response.usage,
            )
            return router_pb2.ChatResponse(
                request_id=plan.request_id,
                text=response.text,
                finish_reason=response.finish_reason,
                usage=usage,
                decision=plan.decision,
                trace_id=trace_id,
            )
        raise self._fail_all(plan)

    async def chat_stream(
        self, request: router_pb2.ChatRequest, tenant: str, time_remaining: float | None
    ) -> AsyncIterator[router_pb2.ChatStreamChunk]:
        """Streams a routed answer; the first chunk carries the decision and the trace id.

        A failing route is escalated only until the first text has been sent; after that a
        failure ends the stream with FINISH_REASON_ERROR. Cancelling the caller cancels the
        backend call (and so the generation on the backend).
        """
        plan = await self.plan(request, tenant, time_remaining)
        plan.stream = True
        trace_id = current_trace_id()
        if plan.hit is not None:
            self._served_from_cache(plan)
            yield router_pb2.ChatStreamChunk(
                request_id=plan.request_id,
                decision=plan.decision,
                text_delta=plan.hit.entry.answer,
                finish_reason=common_pb2.FINISH_REASON_STOP,
                usage=common_pb2.Usage(),
                trace_id=trace_id,
            )
            return
        usage = common_pb2.Usage()
        cascaded = False
        for index, route in enumerate(plan.routes):
            if cascaded and route.tier != "llm":
                continue
            endpoint = self.table.pick_endpoint(route)
            greq = self._generate_request(plan, route, want_logprobs=False)
            timeout = self._attempt_timeout(plan)
            sent = False
            parts: list[str] = []
            finish = common_pb2.FINISH_REASON_UNSPECIFIED
            model = route.model
            gate = self.config.cascade_stream_chars if self._cascade_wanted(plan, index) else 0
            with self.table.lease(endpoint), self._model_span(route, plan):
                call = self.table.pool.stub(endpoint).GenerateStream(greq, timeout=timeout)
                try:
                    async for chunk in self._gated(plan, route, call, gate):
                        if chunk.model:
                            model = chunk.model
                        if chunk.HasField("usage"):
                            add_usage(usage, chunk.usage)
                        finish = chunk.finish_reason
                        if not sent:
                            if not chunk.text_delta and not finish:
                                continue  # nothing to show yet: escalation still possible
                            if finish == common_pb2.FINISH_REASON_ERROR and not chunk.text_delta:
                                break
                            self._answered(plan, route)
                            sent = True
                            out = router_pb2.ChatStreamChunk(
                                request_id=plan.request_id,
                                decision=plan.decision,
                                text_delta=chunk.text_delta,
                                trace_id=trace_id,
                            )
                        else:
                            out = router_pb2.ChatStreamChunk(
                                request_id=plan.request_id, text_delta=chunk.text_delta
                            )
                        if finish:
                            out.finish_reason = finish
                            out.usage.CopyFrom(usage)
                        parts.append(chunk.text_delta)
                        yield out
                except CascadeEscalation:
                    cascaded = True
                    continue
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    if sent:
                        log.warning(
                            "request %s: stream from %s broke: %s",
                            plan.request_id,
                            route.name,
                            code.name,
                        )
                        self.table.record_failure(endpoint, code.name)
                        yield router_pb2.ChatStreamChunk(
                            request_id=plan.request_id,
                            finish_reason=common_pb2.FINISH_REASON_ERROR,
                            usage=usage,
                        )
                        return
                    if plan.pinned or code not in ESCALATE_ON:
                        if code in ESCALATE_ON:
                            self.table.record_failure(endpoint, code.name)
                        raise BackendError(exc) from None
                    self._escalate(plan, route, endpoint, code.name)
                    continue
                finally:
                    call.cancel()  # no-op when finished; aborts the backend when we are cancelled
            if not sent:
                if plan.pinned:
                    raise Unavailable(f"route {route.name} failed", reason="BACKEND_FAILED")
                self._escalate(plan, route, endpoint, "finish reason ERROR")
                continue
            self.table.record_success(endpoint)
            if not finish:  # the backend closed without a last chunk
                yield router_pb2.ChatStreamChunk(
                    request_id=plan.request_id,
                    finish_reason=common_pb2.FINISH_REASON_ERROR,
                    usage=usage,
                )
                return
            metrics.record_usage(plan.tenant, plan.decision.tier, usage)
            self._store(plan, "".join(parts), model, finish, usage)
            return
        raise self._fail_all(plan)

    async def _gated(
        self,
        plan: Plan,
        route: Route,
        call: AsyncIterable[inference_pb2.GenerateChunk],
        hold_chars: int,
    ) -> AsyncIterator[inference_pb2.GenerateChunk]:
        """`call`'s chunks; with `hold_chars`, the first ones are held and judged first.

        The cascade hook for streams: nothing reaches the caller until `hold_chars` of the
        small model's answer (or all of it) have been judged; CascadeEscalation means the
        large tier should answer instead (the caller cancels the small model's call).
        """
        held: list[inference_pb2.GenerateChunk] = []
        size = 0
        judged = hold_chars <= 0
        async for chunk in call:
            if judged:
                yield chunk
                continue
            held.append(chunk)
            size += len(chunk.text_delta)
            if size < hold_chars and not chunk.finish_reason:
                continue
            judged = True
            text = "".join(c.text_delta for c in held)
            if chunk.finish_reason != common_pb2.FINISH_REASON_ERROR and self._cascades(
                plan, route, text, chunk.finish_reason
            ):
                raise CascadeEscalation(route.name)
            for kept in held:
                yield kept
        if not judged:
            for kept in held:  # the stream closed early: let the caller see what came
                yield kept

    async def route(
        self, request: router_pb2.ChatRequest, tenant: str, time_remaining: float | None
    ) -> router_pb2.RouteDecision:
        """The decision `chat` would make, without generating or storing anything."""
        plan = await self.plan(request, tenant, time_remaining, dry_run=True)
        return plan.decision

    # --- helpers ---------------------------------------------------------------------------
    def _answered(self, plan: Plan, route: Route) -> None:
        self._set_route(plan.decision, route)
        span = trace.get_current_span()
        span.set_attribute("gearshift.answered_by", route.name)
        metrics.record_answer(
            tenant=plan.tenant,
            route=route.name,
            tier=plan.decision.tier,
            cache=plan.decision.cache,
            started=plan.started,
            stream=plan.stream,
        )

    @staticmethod
    def _served_from_cache(plan: Plan) -> None:
        assert plan.hit is not None
        metrics.record_answer(
            tenant=plan.tenant,
            route="cache",
            tier=common_pb2.TIER_CACHE,
            cache=plan.decision.cache,
            started=plan.started,
            stream=plan.stream,
        )
        metrics.CACHE_SAVED_TOKENS.labels(plan.tenant).inc(plan.hit.entry.usage.total_tokens)

    @staticmethod
    @contextmanager
    def _model_span(route: Route, plan: Plan) -> Iterator[trace.Span]:
        """A GenAI span around one backend call (parent of the gRPC client span)."""
        with model_span(provider="gearshift", model=route.model, sampling=plan.sampling) as span:
            span.set_attribute("gearshift.route", route.name)
            span.set_attribute("gearshift.tier", route.tier)
            yield span

    def _store(
        self,
        plan: Plan,
        answer: str,
        model: str,
        finish: common_pb2.FinishReason.ValueType,
        usage: common_pb2.Usage,
    ) -> None:
        if not plan.store or self.cache is None or plan.scope is None:
            return
        if finish != common_pb2.FINISH_REASON_STOP or not answer:
            return
        self.cache.store_in_background(
            cache_pb2.StoreRequest(
                scope=plan.scope,
                text=plan.question,
                embedding=plan.embedding,
                answer=answer,
                model=model,
                finish_reason=finish,
                usage=usage,
            )
        )
