"""The InferenceService implementation of the LLM proxy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from gearshift.proxy import openai_map
from gearshift.proxy.accounting import (
    RATE_LIMITED,
    REQUESTS,
    estimate_tokens,
    make_usage,
    record_usage,
)
from gearshift.proxy.config import ProxyConfig
from gearshift.proxy.dispatch import ModelBackend, Route
from gearshift.proxy.ratelimit import RateLimiter
from gearshift.proxy.upstream import UpstreamError
from gearshift.runtime.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    grpc_errors,
)
from gearshift.runtime.genai import model_span, record_response
from gearshift.runtime.ids import new_request_id
from gearshift.runtime.metrics import child
from gearshift.runtime.validation import require_valid_chat
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc

PROVIDER = "openai"  # the wire protocol every upstream speaks (gen_ai.provider.name)
_tracer = trace.get_tracer("gearshift.proxy")

log = logging.getLogger(__name__)

ANONYMOUS_TENANT = "anonymous"
MODEL_METADATA_KEY = "gearshift-model"

Context = grpc.aio.ServicerContext[Any, Any]


class ProxyServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.backends = {
            m.name: ModelBackend(m, config.retry, config.breaker) for m in config.models
        }
        self.limiter = RateLimiter(config.rate_limits)
        self.ready = False

    async def aclose(self) -> None:
        await asyncio.gather(*(b.aclose() for b in self.backends.values()))

    # -- helpers -----------------------------------------------------------------------

    def _backend(self, name: str) -> ModelBackend:
        if not name:
            if len(self.backends) == 1:
                return next(iter(self.backends.values()))
            raise InvalidArgument(
                [FieldViolation("model", f"required: this proxy serves {', '.join(self.backends)}")]
            )
        backend = self.backends.get(name)
        if backend is None:
            raise NotFound(
                f"model {name!r} is not served here; served: {', '.join(self.backends)}",
                "MODEL_NOT_FOUND",
            )
        return backend

    def _admit(self, tenant: str, model: str, estimate: int) -> None:
        refusal = self.limiter.admit(tenant, estimate)
        if refusal is not None:
            RATE_LIMITED.labels(tenant, refusal.kind).inc()
            child(REQUESTS, tenant, model, "rate_limited").inc()
            raise ResourceExhausted(
                f"tenant {tenant!r} is over its {refusal.kind}-per-minute limit; "
                f"retry in {refusal.retry_after_s:.2f}s",
                refusal.retry_after_s,
            )

    @staticmethod
    def _deadline(context: Context) -> float | None:
        remaining = context.time_remaining()
        if remaining is None:
            return None
        return asyncio.get_running_loop().time() + remaining

    def _prepare(
        self, request: inference_pb2.GenerateRequest
    ) -> tuple[ModelBackend, str, str, int]:
        backend = self._backend(request.model)
        require_valid_chat(
            request.messages, request.sampling, tools=request.tools, tool_choice=request.tool_choice
        )
        tenant = request.tenant or ANONYMOUS_TENANT
        estimate = estimate_tokens(sum(len(m.content) for m in request.messages))
        self._admit(tenant, backend.config.name, estimate)
        return backend, tenant, request.request_id or new_request_id(), estimate

    def _finish(
        self,
        backend: ModelBackend,
        tenant: str,
        estimate: int,
        usage: tuple[int, int] | None,
        text_chars: int,
    ) -> common_pb2.Usage:
        if usage is None:  # an upstream that reports no usage: account an estimate
            usage = (estimate, estimate_tokens(text_chars) if text_chars else 0)
        result = make_usage(usage[0], usage[1], backend.config.price)
        self.limiter.settle(tenant, estimate, result.total_tokens)
        record_usage(tenant, backend.config.name, result)
        backend.load.add_tokens(result.completion_tokens)
        child(REQUESTS, tenant, backend.config.name, "ok").inc()
        return result

    def _failed(self, backend: ModelBackend, tenant: str, estimate: int, outcome: str) -> None:
        self.limiter.settle(tenant, estimate, 0)  # give back the prompt estimate
        child(REQUESTS, tenant, backend.config.name, outcome).inc()

    # -- RPCs --------------------------------------------------------------------------

    @grpc_errors
    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: Context
    ) -> inference_pb2.GenerateResponse:
        backend, tenant, request_id, estimate = self._prepare(request)
        deadline = self._deadline(context)
        started = time.perf_counter()

        async def attempt(
            route: Route, remaining: float | None
        ) -> tuple[openai_map.Completion, float | None]:
            """The whole answer, and when its first token came (perf_counter seconds).

            Streamed from the upstream and put back together: first_byte_timeout_s then
            bounds a stall without also bounding how long a whole answer may take.
            """
            body = openai_map.request_body(request, route.config.model, stream=True)
            with model_span(
                provider=PROVIDER,
                model=route.config.model,
                sampling=request.sampling,
                server_address=route.name,
                kind=SpanKind.CLIENT,
            ) as span:
                builder = openai_map.CompletionBuilder()
                first_token_at: float | None = None
                async with contextlib.aclosing(route.client.stream(body, remaining)) as events:
                    try:
                        async for event in events:
                            delta = _parse_event(route, event)
                            if first_token_at is None and delta.has_output:
                                first_token_at = time.perf_counter()
                            builder.add(delta)
                    except UpstreamError as exc:
                        if not (exc.outcome == "truncated" and builder.finished):
                            raise  # else a finished answer with only [DONE] missing
                try:
                    completion = builder.completion()
                except ValueError as exc:
                    raise UpstreamError(
                        route.name,
                        "truncated" if builder.events == 0 else "malformed",
                        f"upstream {route.name!r} sent an answer without a usable choice ({exc})",
                    ) from None
                prompt, output = completion.usage or (0, 0)
                record_response(
                    span,
                    model=route.config.model,
                    usage=common_pb2.Usage(prompt_tokens=prompt, completion_tokens=output),
                    finish_reason=completion.finish_reason,  # type: ignore[arg-type]
                )
                return completion, first_token_at

        backend.load.running += 1
        outcome = "error"
        try:
            async with _bounded(deadline):
                route, (completion, first_token_at) = await backend.dispatch(attempt, deadline)
            outcome = "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except TimeoutError:
            outcome = "deadline"
            raise DeadlineExceeded(
                f"model {backend.config.name!r}: the call's deadline expired upstream"
            ) from None
        finally:
            backend.load.running -= 1
            if outcome != "ok":
                self._failed(backend, tenant, estimate, outcome)
        route.breaker.record_success()
        route.count("ok")
        ttft_ms = ((first_token_at or time.perf_counter()) - started) * 1000
        backend.load.add_ttft(ttft_ms)
        usage = self._finish(backend, tenant, estimate, completion.usage, len(completion.text))
        return inference_pb2.GenerateResponse(
            request_id=request_id,
            model=backend.config.name,
            text=completion.text,
            finish_reason=completion.finish_reason,  # type: ignore[arg-type]
            usage=usage,
            logprobs=completion.logprobs,
            time_to_first_token_ms=ttft_ms,
            upstream=route.name,
            tool_calls=completion.tool_calls,
            choices=completion.choices,
        )

    @grpc_errors
    async def GenerateStream(
        self, request: inference_pb2.GenerateRequest, context: Context
    ) -> AsyncIterator[inference_pb2.GenerateChunk]:
        backend, tenant, request_id, estimate = self._prepare(request)
        deadline = self._deadline(context)
        started = time.perf_counter()
        model = backend.config.name

        async def attempt(
            route: Route, remaining: float | None
        ) -> tuple[AsyncGenerator[dict[str, Any], None], openai_map.Delta]:
            body = openai_map.request_body(request, route.config.model, stream=True)
            events = route.client.stream(body, remaining)
            try:
                first = _parse_event(route, await anext(events))
            except StopAsyncIteration:
                raise UpstreamError(
                    route.name, "truncated", f"upstream {route.name!r} sent an empty stream"
                ) from None
            except BaseException:
                await events.aclose()
                raise
            return events, first

        backend.load.running += 1
        route: Route | None = None
        finished = False
        outcome = "error"
        # Not made current: an async generator may be closed in another context.
        span = _tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT)
        recording = span.is_recording()
        if recording:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", PROVIDER)
            span.set_attribute("gen_ai.request.model", model)
        try:
            try:
                async with _bounded(deadline):
                    route, (events, first) = await backend.dispatch(attempt, deadline)
                if recording:
                    span.set_attribute("server.address", route.name)
            except TimeoutError:
                outcome = "deadline"
                raise DeadlineExceeded(
                    f"model {model!r}: the call's deadline expired upstream"
                ) from None
            backend.load.add_ttft((time.perf_counter() - started) * 1000)
            # From here on the client gets data: no retry, no fail-over.
            finish: int = common_pb2.FINISH_REASON_UNSPECIFIED
            last_index = 0  # the answer whose finish reason goes on the last chunk
            usage: tuple[int, int] | None = None
            text_chars = 0
            delta: openai_map.Delta | None = first
            sent = 0
            async with contextlib.aclosing(events):
                while True:
                    for part in delta.parts if delta is not None else ():
                        if part.finish_reason:
                            if finish and last_index != part.index:
                                # n > 1: an earlier answer's end goes out on its own; the
                                # last one's waits for the usage, on the last chunk.
                                yield inference_pb2.GenerateChunk(
                                    request_id=request_id,
                                    model=model,
                                    index=last_index,
                                    finish_reason=finish,  # type: ignore[arg-type]
                                )
                            finish, last_index = part.finish_reason, part.index
                        if part.text or part.logprobs or part.tool_calls or sent == 0:
                            text_chars += len(part.text) + sum(
                                len(c.arguments) for c in part.tool_calls
                            )
                            yield inference_pb2.GenerateChunk(
                                request_id=request_id,
                                model=model,
                                index=part.index,
                                text_delta=part.text,
                                logprobs=part.logprobs,
                                tool_calls=part.tool_calls,
                                upstream=route.name if sent == 0 else "",
                            )
                            sent += 1
                    if delta is not None:
                        usage = delta.usage or usage
                        if sent == 0 and not delta.parts:
                            yield inference_pb2.GenerateChunk(
                                request_id=request_id, model=model, upstream=route.name
                            )
                            sent += 1
                    try:
                        delta = _parse_event(route, await anext(events))
                    except StopAsyncIteration:
                        break
                    except UpstreamError as exc:
                        if exc.outcome == "truncated" and finish:
                            break  # finished answer, only the [DONE] marker is missing
                        if exc.outcome == "timeout" and _expired(deadline):
                            # The read timeout is clipped to the call's deadline: the
                            # caller's deadline ran out, the upstream is not at fault.
                            route.count("deadline")
                            outcome = "deadline"
                            raise DeadlineExceeded(
                                f"model {model!r}: the call's deadline expired after "
                                f"{sent} chunks were relayed"
                            ) from None
                        route.count(exc.outcome)
                        route.breaker.record_failure()
                        raise Unavailable(
                            f"model {model!r}: {exc.message} after {sent} chunks were relayed; "
                            "the answer is incomplete",
                            "UPSTREAM_STREAM_BROKEN",
                        ) from None
            route.breaker.record_success()
            route.count("ok")
            result = self._finish(backend, tenant, estimate, usage, text_chars)
            record_response(span, model=model, usage=result, finish_reason=finish)  # type: ignore[arg-type]
            finished = True
            yield inference_pb2.GenerateChunk(
                request_id=request_id,
                model=model,
                index=last_index,
                finish_reason=finish or common_pb2.FINISH_REASON_STOP,  # type: ignore[arg-type]
                usage=result,
            )
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            if route is not None and not finished:
                route.count("cancelled")
                route.breaker.release()
            raise
        finally:
            span.end()
            backend.load.running -= 1
            if not finished:
                self._failed(backend, tenant, estimate, outcome)

    @grpc_errors
    async def GetModelInfo(
        self, request: inference_pb2.GetModelInfoRequest, context: Context
    ) -> inference_pb2.ModelInfo:
        wanted = dict(context.invocation_metadata() or ()).get(MODEL_METADATA_KEY, "")
        backend = self._backend(str(wanted)) if wanted else next(iter(self.backends.values()))
        load = backend.load
        return inference_pb2.ModelInfo(
            model=backend.config.name,
            backend="openai-proxy",
            max_context_tokens=backend.config.max_context_tokens,
            load=inference_pb2.LoadReport(
                running_requests=max(0, load.running),
                generated_tokens_per_second=load.tokens_per_second(),
                time_to_first_token_p50_ms=load.ttft_p50_ms(),
            ),
            upstreams=[r.status() for r in backend.routes],
            # Not ready while every upstream's breaker is open: a router polling this
            # stops sending here until a cooldown lets a probe through.
            ready=self.ready and backend.answerable(),
        )


def _parse_event(route: Route, event: dict[str, Any]) -> openai_map.Delta:
    try:
        return openai_map.parse_chunk(event)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise UpstreamError(
            route.name,
            "malformed",
            f"upstream {route.name!r} sent an unusable stream event ({type(exc).__name__})",
        ) from None


def _expired(deadline: float | None, slack_s: float = 0.05) -> bool:
    """Whether the call's deadline has (all but) passed, on the event loop's clock."""
    return deadline is not None and deadline - asyncio.get_running_loop().time() < slack_s


@contextlib.asynccontextmanager
async def _bounded(deadline: float | None) -> AsyncIterator[None]:
    """asyncio.timeout at the call's deadline (no-op without one). Never spans a yield."""
    async with asyncio.timeout_at(deadline):
        yield
