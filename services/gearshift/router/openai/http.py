"""The OpenAI-compatible HTTP API: `/v1/chat/completions` (unary and SSE) and `/v1/models`.

It runs in the gRPC server's event loop (aiohttp) and calls the same pipeline, so the
official `openai` SDK works unchanged with `base_url=http://host:port/v1`. The routing
decision travels in `x-gearshift-*` response headers; errors use OpenAI's JSON error
shape with the matching HTTP status (401 for a missing or unknown key).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiohttp import web
from opentelemetry import propagate, trace

from gearshift.router.limits import (
    InputLimits,
    RequestTooLarge,
    log_refusal,
)
from gearshift.router.openai import protocol
from gearshift.router.openai.protocol import (
    DEFAULT_LIMITS,
    ERROR_TYPE,
    HTTP_STATUS,
    UnsupportedMediaType,
    completion_id,
    decision_headers,
    gearshift_extension,
    model_name,
    parse_chat_request,
    parse_feedback,
    usage_json,
)
from gearshift.router.openai.server import runner
from gearshift.router.outcomes.feedback import OutcomeService
from gearshift.router.pipeline import Pipeline
from gearshift.runtime.api_keys import KeyTable
from gearshift.runtime.drain import Drain
from gearshift.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    GearshiftError,
    InvalidArgument,
)
from gearshift.runtime.http_drain import drain_middleware
from gearshift.runtime.telemetry import tracing_enabled
from gearshift.runtime.trace_context import LightScope
from gearshift.v1 import common_pb2, router_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

JSON_CONTENT_TYPES = frozenset({"application/json"})
# With a drain, the runner is cleaned up only once the drain has waited for every request
# (or its deadline has passed): this bounds the wait for responses still being written.
DRAINED_SHUTDOWN_S = 2.0


def error_response(exc: GearshiftError) -> web.Response:
    status = 413 if isinstance(exc, RequestTooLarge) else HTTP_STATUS.get(exc.code, 500)
    if isinstance(exc, UnsupportedMediaType):
        status = 415
    param = None
    if isinstance(exc, InvalidArgument) and exc.violations:
        param = exc.violations[0].field
    body = {
        "error": {
            "message": exc.message,
            "type": ERROR_TYPE.get(status, "api_error"),
            "param": param,
            "code": exc.reason.lower(),
        }
    }
    headers = {}
    if status == 401:
        headers["www-authenticate"] = "Bearer"
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers["retry-after"] = str(max(1, round(retry)))
    return web.json_response(body, status=status, headers=headers)


class OpenAIHttpApi:
    """aiohttp handlers over the pipeline; `start()` binds the port in the running loop."""

    def __init__(
        self,
        pipeline: Pipeline,
        keys: KeyTable,
        host: str,
        port: int,
        drop_unsupported_params: bool = False,
        limits: InputLimits = DEFAULT_LIMITS,
        reuse_port: bool = False,
        outcomes: OutcomeService | None = None,
    ) -> None:
        self.limits = limits
        self.outcomes = outcomes
        self.pipeline = pipeline
        self.reuse_port = reuse_port
        self.keys = keys
        self.host = host
        self.requested_port = port
        self.drop_unsupported_params = drop_unsupported_params
        self.port: int | None = None
        self.drain: Drain | None = None
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        middlewares = [] if self.drain is None else [drain_middleware(self.drain, error_response)]
        app = web.Application(client_max_size=self.limits.max_body_bytes, middlewares=middlewares)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/feedback", self.feedback)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def start(self) -> int:
        # handler_cancellation: a client that disconnects cancels its handler, which
        # cancels the backend call (and the generation) through the pipeline.
        shutdown = {} if self.drain is None else {"shutdown_timeout": DRAINED_SHUTDOWN_S}
        self._runner = runner(
            self.application(),
            **shutdown,
            handler_cancellation=True,
            access_log=None,
            max_line_size=self.limits.max_header_bytes,
            max_field_size=self.limits.max_header_bytes,
            max_headers=self.limits.max_headers,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port, reuse_port=self.reuse_port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.requested_port
        log.info("OpenAI-compatible HTTP API on %s:%s", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        try:
            self.keys.authenticate(request.headers.get("authorization"))
        except GearshiftError as exc:
            return error_response(exc)
        ids = ["auto"]
        snapshot = self.pipeline.table.snapshot
        for route in snapshot.routes:
            for name in (route.name, route.model):
                if name not in ids:
                    ids.append(name)
        ids += [s.name for s in snapshot.sources if s.name not in ids]  # pinnable sources
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "gearshift"} for i in ids]
        return web.json_response({"object": "list", "data": data})

    async def feedback(self, request: web.Request) -> web.Response:
        """Stores how an answer went (see `RouterService.Feedback`)."""
        try:
            tenant = self.keys.authenticate(request.headers.get("authorization"))
            if self.outcomes is None:
                raise FailedPrecondition(
                    "outcome recording is off on this router (set outcomes_enabled)",
                    reason="OUTCOMES_DISABLED",
                )
            body = await self._admitted_body(request)
            stored = await self.outcomes.feedback(tenant, parse_feedback(body))
        except GearshiftError as exc:
            response_error = error_response(exc)
            if response_error.status < 500:
                log_refusal("OpenAI API", exc)
            return response_error
        return web.json_response(
            {
                "object": "feedback",
                "id": f"chatcmpl-{stored.response_id}",
                "score": stored.score,
                "tier": common_pb2.Tier.Name(stored.tier).removeprefix("TIER_").lower(),
                "route": stored.route,
            }
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        with (
            tracer.start_as_current_span(
                "POST /v1/chat/completions",
                context=propagate.extract(request.headers),
                kind=trace.SpanKind.SERVER,
            )
            if tracing_enabled()
            else LightScope(request.headers.get("traceparent"))
        ) as span:
            recording = span.is_recording()
            if recording:
                span.set_attribute("http.request.method", "POST")
                span.set_attribute("url.path", "/v1/chat/completions")
            try:
                tenant = self.keys.authenticate(request.headers.get("authorization"))
                body = await self._admitted_body(request)
                chat, stream = parse_chat_request(
                    body,
                    request.headers,
                    drop_unsupported=self.drop_unsupported_params,
                    limits=self.limits,
                    multi_limits=self.pipeline.multi.config.limits,
                )
                if stream:
                    options = body.get("stream_options") or {}
                    include_usage = isinstance(options, Mapping) and bool(
                        options.get("include_usage")
                    )
                    return await self._stream(request, chat, tenant, include_usage)
                response = await self.pipeline.chat(chat, tenant, None)
            except GearshiftError as exc:
                response_error = error_response(exc)
                if response_error.status < 500:
                    log_refusal("OpenAI API", exc)
                if recording:
                    span.set_attribute("http.response.status_code", response_error.status)
                return response_error
            if recording:
                span.set_attribute("http.response.status_code", 200)
            answer: dict[str, Any] = {
                "id": completion_id(response.decision, response.request_id),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_name(response.decision),
                "choices": protocol.choices_json(response, chat.sampling.logprobs),
                "usage": usage_json(response.usage),
            }
            extension = gearshift_extension(
                response.decision.source, response.citations, response.decision
            )
            if extension is not None:
                answer["gearshift"] = extension
            return web.json_response(
                answer,
                headers=decision_headers(response.decision, response.trace_id, response.request_id),
            )

    async def _admitted_body(self, request: web.Request) -> dict[str, Any]:
        """The parsed body, once content type, size, depth and text are within limits.

        Cheap checks come first: a 10 MB body is refused from its Content-Length without
        being read, so it costs the event loop nothing.
        """
        if request.content_type not in JSON_CONTENT_TYPES:
            raise UnsupportedMediaType(request.headers.get("content-type", ""))
        if request.content_length is not None:
            self.limits.check_body_size(request.content_length)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:  # chunked, no Content-Length
            raise RequestTooLarge(
                "max_body_bytes",
                self.limits.max_body_bytes + 1,
                self.limits.max_body_bytes,
                "the request body's size in bytes",
            ) from None
        self.limits.check_body_size(len(raw))
        try:
            body = json.loads(raw)
        except RecursionError:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "body",
                        f"JSON is nested deeper than {self.limits.max_json_depth} levels "
                        "(router setting max_json_depth)",
                    )
                ]
            ) from None
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument([FieldViolation("body", "is not valid JSON")]) from None
        if not isinstance(body, dict):
            raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
        self.limits.check_json(body)
        self.limits.check_openai_body(body)
        return body

    async def _stream(
        self,
        request: web.Request,
        chat: router_pb2.ChatRequest,
        tenant: str,
        include_usage: bool,
    ) -> web.StreamResponse:
        chunks: AsyncIterator[router_pb2.ChatStreamChunk] = self.pipeline.chat_stream(
            chat, tenant, None
        )
        try:
            # Errors before the first chunk (auth, validation, every route down) are plain
            # JSON errors with a status; the headers go out with the first chunk's decision.
            first = await anext(chunks)
        except StopAsyncIteration:
            raise GearshiftError("the stream ended before it started") from None
        created = int(time.time())
        request_id = first.request_id
        chat_id = completion_id(first.decision, request_id)
        model = model_name(first.decision)
        response = web.StreamResponse(
            status=200,
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                **decision_headers(first.decision, first.trace_id, request_id),
            },
        )
        await response.prepare(request)

        source = first.decision.source

        want_logprobs = chat.sampling.logprobs

        def event(
            delta: dict[str, Any],
            finish: str | None,
            citations: Sequence[router_pb2.Citation] = (),
            index: int = 0,
            logprobs: Sequence[common_pb2.TokenLogprob] = (),
            decision: router_pb2.RouteDecision | None = None,
        ) -> bytes:
            payload: dict[str, Any] = {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": index,
                        "delta": delta,
                        "finish_reason": finish,
                        "logprobs": protocol.logprobs_json(logprobs) if want_logprobs else None,
                    }
                ],
            }

            extension = gearshift_extension(source, citations, decision)
            if extension is not None:
                payload["gearshift"] = extension
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        usage = common_pb2.Usage()
        try:
            chunk: router_pb2.ChatStreamChunk | None = first
            started: set[int] = set()  # choices whose first delta (with the role) went out
            while chunk is not None:
                delta: dict[str, Any] = {"content": chunk.text_delta}
                if chunk.tool_calls:
                    delta["tool_calls"] = protocol.tool_call_deltas_json(chunk.tool_calls)
                    if not chunk.text_delta:
                        delta["content"] = None
                if chunk.index not in started:
                    delta["role"] = "assistant"
                    started.add(chunk.index)
                finish = protocol.FINISH.get(chunk.finish_reason) if chunk.finish_reason else None
                if chunk.HasField("usage"):
                    usage.CopyFrom(chunk.usage)
                # Multi-routing: the first event carries the plan, the last the outcome.
                decision = chunk.final_decision if chunk.HasField("final_decision") else None
                if chunk.HasField("decision") and decision is None:
                    decision = chunk.decision
                await response.write(
                    event(delta, finish, chunk.citations, chunk.index, chunk.logprobs, decision)
                )
                chunk = await anext(chunks, None)
            if include_usage:
                tail = {
                    "id": chat_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage_json(usage),
                }
                await response.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
        except GearshiftError as exc:
            payload = {"error": {"message": exc.message, "type": "api_error", "code": exc.reason}}
            await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
