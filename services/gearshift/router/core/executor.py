"""The executor: runs a `Plan`, with ONE attempt/failover/cascade loop for unary and streaming.

`run` yields router chunks. A unary request makes one `Generate` call per attempt and turns
its answer into a single chunk; a streaming request forwards `GenerateStream` chunks. Both
go through the same loop, which decides, per attempt, whether to fail over to the next
route (a retryable failure, or a failed generation, before any text was sent), to cascade
(a small-model answer the cascade's estimator judges likely not good enough: the next llm
route answers instead) or to finish. `Pipeline.chat` folds the chunks into one response.
Both moves are recorded alike on the wire (`RouteDecision.escalated_from`, the
`escalations` metric); in the code, "failover" and "cascade" name them apart.

A failing route is failed over only until the first text has been sent; after that a
failure ends the stream with FINISH_REASON_ERROR. Cancelling the caller cancels the backend
call (and so the generation on the backend).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from opentelemetry import trace

from gearshift.router import metrics
from gearshift.router.clients.cache_client import CacheClient
from gearshift.router.core import caching
from gearshift.router.core.events import AnsweredEvent, AnswerObserver
from gearshift.router.core.plan import PipelineConfig, Plan, cascade_policy, set_route
from gearshift.router.core.quoting import quote_answer, support
from gearshift.router.core.request_options import unary_chunks
from gearshift.router.table.routing_table import Route, RoutingTable
from gearshift.runtime.errors import DeadlineExceeded, GearshiftError, Unavailable
from gearshift.runtime.genai import model_span, record_response
from gearshift.runtime.telemetry import current_trace_id
from gearshift.runtime.trace_context import outgoing_metadata
from gearshift.v1 import common_pb2, inference_pb2, router_pb2

log = logging.getLogger(__name__)

# Backend failures after which the request fails over to the next route up.
FAILOVER_ON = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class BackendError(GearshiftError):
    """A backend's non-retryable error, passed on with its status code."""

    def __init__(self, exc: grpc.aio.AioRpcError) -> None:
        super().__init__(exc.details() or exc.code().name, exc.code().name, code=exc.code())


def add_usage(total: common_pb2.Usage, more: common_pb2.Usage) -> None:
    total.prompt_tokens += more.prompt_tokens
    total.completion_tokens += more.completion_tokens
    total.total_tokens += more.total_tokens
    total.cost_usd += more.cost_usd


@dataclass
class Attempt:
    """One call to one route's backend, as the shared loop sees it."""

    route: Route
    endpoint: str
    cascade: bool
    verify: bool = False  # a source answer, served only when its passages support it
    sent: bool = False  # text (or the last chunk) has gone out: no failover or cascade any more
    parts: list[str] = field(default_factory=list)
    finish: common_pb2.FinishReason.ValueType = common_pb2.FINISH_REASON_UNSPECIFIED
    model: str = ""
    held: list[inference_pb2.GenerateChunk] = field(default_factory=list)  # judged, not sent


class Executor:
    """Runs plans against the backends of the routing table and stores answers."""

    def __init__(
        self, config: PipelineConfig, table: RoutingTable, cache: CacheClient | None
    ) -> None:
        self.config = config
        self.table = table
        self.cache = cache
        self.observers: list[AnswerObserver] = []  # told of every generated answer
        self.cascade_policy = cascade_policy(config)

    async def run(self, plan: Plan) -> AsyncIterator[router_pb2.ChatStreamChunk]:
        """The chunks of the plan's answer; the first carries the decision and trace id."""
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
                citations=plan.citations,
            )
            return
        if self._source_mode(plan) == "quote":
            yield self._quoted(plan, trace_id)
            return
        usage = common_pb2.Usage()
        index = 0
        while index < len(plan.routes):
            route = plan.routes[index]
            attempt = Attempt(
                route,
                self.table.pick_endpoint(route),
                cascade=self._cascade_wanted(plan, index),
                verify=self._source_mode(plan) == "verify",
                model=route.model,
            )
            next_route_why = ""
            with self.table.lease(attempt.endpoint), self._model_span(route, plan) as span:
                calls = self._call(plan, attempt, span)
                try:
                    async for chunk in calls:
                        if chunk.model:
                            attempt.model = chunk.model
                        if chunk.HasField("usage"):
                            add_usage(usage, chunk.usage)
                        attempt.finish = chunk.finish_reason
                        release = [chunk]
                        if not attempt.sent:
                            if not (chunk.text_delta or chunk.tool_calls) and not attempt.finish:
                                continue  # nothing to show yet: failover still possible
                            if self._failed_generation(plan, chunk):
                                next_route_why = "finish reason ERROR"
                                break
                            if attempt.verify:
                                # A source answer is held whole, then served if the
                                # passages support it, else replaced by the quote.
                                attempt.held.append(chunk)
                                if not attempt.finish:
                                    continue
                                release, attempt.held = self._verified(plan, attempt), []
                            elif attempt.cascade:
                                # The cascade hook: hold the small model's first
                                # `cascade_stream_chars` (a unary answer is one chunk),
                                # judge them, then send them or escalate unseen.
                                attempt.held.append(chunk)
                                held = "".join(c.text_delta for c in attempt.held)
                                if (
                                    len(held) < self.config.cascade_stream_chars
                                    and not attempt.finish
                                ):
                                    continue
                                if self._cascades(plan, route, held, attempt):
                                    next_route_why = "cascade"
                                    break
                                release, attempt.held = attempt.held, []
                            self._answered(plan, route)
                        for i, part in enumerate(release):
                            out = router_pb2.ChatStreamChunk(
                                request_id=plan.request_id,
                                text_delta=part.text_delta,
                                tool_calls=part.tool_calls,
                                index=part.index,
                                logprobs=part.logprobs if plan.sampling.logprobs else (),
                            )
                            if not attempt.sent:
                                attempt.sent = True
                                out.decision.CopyFrom(plan.decision)
                                out.trace_id = trace_id
                            if attempt.finish and i == len(release) - 1:
                                out.finish_reason = attempt.finish
                                out.usage.CopyFrom(usage)
                                if attempt.finish != common_pb2.FINISH_REASON_ERROR:
                                    out.citations.extend(plan.citations)
                            attempt.parts.append(part.text_delta)
                            yield out
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    if attempt.sent:
                        log.warning(
                            "request %s: stream from %s broke: %s",
                            plan.request_id,
                            route.name,
                            code.name,
                        )
                        self.table.record_failure(attempt.endpoint, code.name)
                        yield self._error_chunk(plan, usage)
                        return
                    if plan.pinned or code not in FAILOVER_ON:
                        if code in FAILOVER_ON:
                            self.table.record_failure(attempt.endpoint, code.name)
                        raise BackendError(exc) from None
                    self._fail_over(plan, route, attempt.endpoint, code.name)
                    index += 1
                    continue
                finally:
                    await calls.aclose()  # cancels the backend call when we stop early
            if next_route_why == "cascade":
                index = next(
                    i for i in range(index + 1, len(plan.routes)) if plan.routes[i].tier == "llm"
                )
                continue
            if not attempt.sent:
                if plan.pinned:
                    raise Unavailable(f"route {route.name} failed", reason="BACKEND_FAILED")
                self._fail_over(plan, route, attempt.endpoint, next_route_why or "no answer")
                index += 1
                continue
            self.table.record_success(attempt.endpoint)
            if not attempt.finish:  # the backend closed without a last chunk
                yield self._error_chunk(plan, usage)
                return
            metrics.record_usage(plan.tenant, plan.decision.tier, usage)
            answer = "".join(attempt.parts)
            caching.store_answer(self.cache, plan, answer, attempt.model, attempt.finish, usage)
            self._observe(plan, answer, attempt.model or route.model, attempt.finish)
            return
        raise self._fail_all(plan)

    async def _call(
        self, plan: Plan, attempt: Attempt, span: trace.Span
    ) -> AsyncGenerator[inference_pb2.GenerateChunk]:
        """The backend's answer as chunks: one for a unary call, many for a stream."""
        route = attempt.route
        greq = self._generate_request(plan, route, want_logprobs=attempt.cascade)
        timeout = self._attempt_timeout(plan)
        stub = self.table.pool.stub(attempt.endpoint)
        if not plan.stream:
            response = await stub.Generate(greq, timeout=timeout, metadata=outgoing_metadata())
            record_response(
                span,
                model=response.model or route.model,
                usage=response.usage,
                finish_reason=response.finish_reason,
            )
            self.table.record_success(attempt.endpoint)  # it answered, whatever it said
            for chunk in unary_chunks(response):
                yield chunk
            return
        call = stub.GenerateStream(greq, timeout=timeout, metadata=outgoing_metadata())
        try:
            async for chunk in call:
                yield chunk
        finally:
            call.cancel()  # no-op when finished; aborts the backend when we are cancelled

    @staticmethod
    def _failed_generation(plan: Plan, chunk: inference_pb2.GenerateChunk) -> bool:
        """A finish reason ERROR the loop fails over from instead of passing it on.

        A stream fails over only when no text came with it (pinned: UNAVAILABLE); a unary
        answer fails over unless the route is pinned, when the caller gets it as it is.
        """
        if chunk.finish_reason != common_pb2.FINISH_REASON_ERROR:
            return False
        return not chunk.text_delta if plan.stream else not plan.pinned

    def _cascades(self, plan: Plan, route: Route, answer: str, attempt: Attempt) -> bool:
        """The escalation estimator's verdict on a small-model answer (recorded)."""
        if self.cascade_policy is None:
            return False
        logprobs = [lp for c in attempt.held for lp in c.logprobs]
        verdict = self.cascade_policy.judge(plan.question, answer, attempt.finish, logprobs)
        plan.decision.reasons.append(verdict.reason(route.name))
        if not verdict.escalate:
            return False
        metrics.ESCALATIONS.labels(route.name, "cascade").inc()
        plan.decision.escalated_from.append(route.name)
        return True

    @staticmethod
    def _error_chunk(plan: Plan, usage: common_pb2.Usage) -> router_pb2.ChatStreamChunk:
        return router_pb2.ChatStreamChunk(
            request_id=plan.request_id, finish_reason=common_pb2.FINISH_REASON_ERROR, usage=usage
        )

    def _generate_request(
        self, plan: Plan, route: Route, want_logprobs: bool
    ) -> inference_pb2.GenerateRequest:
        sampling = common_pb2.SamplingParams()
        sampling.CopyFrom(plan.sampling)
        if want_logprobs:
            sampling.logprobs = True
        request = inference_pb2.GenerateRequest(
            request_id=plan.request_id,
            tenant=plan.tenant,
            model=route.model,
            messages=plan.messages,
            sampling=sampling,
        )
        request.MergeFrom(plan.extras)  # tools, tool_choice, user (request_options.py)
        return request

    def _attempt_timeout(self, plan: Plan) -> float:
        remaining = plan.remaining()
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline expired before a backend answered")
        return min(remaining, self.config.backend_timeout_s)

    def _fail_over(self, plan: Plan, route: Route, endpoint: str, why: str) -> None:
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
            and plan.cascade_ok
            and not plan.pinned
            and (not plan.stream or self.config.cascade_stream_chars > 0)
            and route.tier == "slm"
            and any(r.tier == "llm" for r in plan.routes[index + 1 :])
        )

    # --- helpers ---------------------------------------------------------------------------
    def _answered(self, plan: Plan, route: Route) -> None:
        set_route(plan.decision, route)
        span = trace.get_current_span()
        if span.is_recording():
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

    def _source_mode(self, plan: Plan) -> str:
        """How this plan's source answer is made; "generate" for anything but one free-text
        answer from passages (tool calls, JSON and n answers are the model's to write)."""
        if plan.source is None or not plan.passages or not plan.cascade_ok:
            return "generate"
        return self.config.source_answer

    @staticmethod
    def _quoted(plan: Plan, trace_id: str) -> router_pb2.ChatStreamChunk:
        """The quote as the whole answer (source_answer quote): no model is called."""
        plan.decision.model = ""
        plan.decision.reasons.append(
            f"answered by quoting passage [1] of source {plan.decision.source} "
            "(source_answer quote): no model was called"
        )
        metrics.record_answer(
            tenant=plan.tenant,
            route=plan.decision.source,
            tier=plan.decision.tier,
            cache=plan.decision.cache,
            started=plan.started,
            stream=plan.stream,
        )
        return router_pb2.ChatStreamChunk(
            request_id=plan.request_id,
            decision=plan.decision,
            text_delta=quote_answer(plan.question, plan.passages),
            finish_reason=common_pb2.FINISH_REASON_STOP,
            usage=common_pb2.Usage(),
            trace_id=trace_id,
            citations=plan.citations[:1],
        )

    def _verified(self, plan: Plan, attempt: Attempt) -> list[inference_pb2.GenerateChunk]:
        """The held answer if its passages support it; else one chunk with the quote."""
        text = "".join(c.text_delta for c in attempt.held)
        share = support(text, plan.passages)
        floor = self.config.source_support_min
        if share >= floor:
            plan.decision.reasons.append(
                f"answer supported by its passages (support {share:.2f} >= {floor:.2f})"
            )
            return attempt.held
        plan.decision.reasons.append(
            f"the model's answer was not served (support {share:.2f} < {floor:.2f}): "
            "quoted passage [1] instead"
        )
        del plan.citations[1:]
        attempt.finish = common_pb2.FINISH_REASON_STOP
        last = attempt.held[-1]
        return [
            inference_pb2.GenerateChunk(
                text_delta=quote_answer(plan.question, plan.passages),
                finish_reason=common_pb2.FINISH_REASON_STOP,
                usage=last.usage,
                model=last.model,
            )
        ]

    @staticmethod
    @contextmanager
    def _model_span(route: Route, plan: Plan) -> Iterator[trace.Span]:
        """A GenAI span around one backend call (parent of the gRPC client span)."""
        with model_span(provider="gearshift", model=route.model, sampling=plan.sampling) as span:
            if span.is_recording():
                span.set_attribute("gearshift.route", route.name)
                span.set_attribute("gearshift.tier", route.tier)
            yield span

    def _observe(self, plan: Plan, answer: str, model: str, finish: int) -> None:
        """Tells the observers (decision recording, shadow judging) about an answer."""
        if not self.observers or not plan.decision.response_id:
            return
        d = plan.decision
        event = AnsweredEvent(
            tenant=plan.tenant,
            response_id=d.response_id,
            question=plan.question,
            messages=plan.messages,
            embedding=plan.embedding,
            difficulty=d.difficulty,
            threshold=d.threshold,
            tier="llm" if d.tier == common_pb2.TIER_LLM else "slm",
            route=d.route,
            model=model,
            answer=answer,
            finish_reason=finish,
            pinned=plan.pinned,
        )
        for observer in self.observers:
            try:
                observer.answered(event)
            except Exception:  # bookkeeping must never fail an answer
                log.exception("answer observer %r failed", observer)
