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

import grpc
from aiohttp import web
from opentelemetry import propagate, trace

from gearshift.router import http_server, openai_params
from gearshift.router.auth import KeyTable
from gearshift.router.limits import (
    INT64_MAX,
    INT64_MIN,
    InputLimits,
    RequestTooLarge,
    float_violation,
    integer_violation,
    log_refusal,
)
from gearshift.router.multi.policy import HEADER as MULTI_HEADER
from gearshift.router.multi.policy import MultiLimits, parse_header, policy_from_proto
from gearshift.router.outcomes.feedback import OutcomeService
from gearshift.router.pipeline import Pipeline
from gearshift.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    GearshiftError,
    InvalidArgument,
)
from gearshift.runtime.telemetry import tracing_enabled
from gearshift.runtime.trace_context import LightScope
from gearshift.v1 import common_pb2, router_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
ERROR_TYPE = {
    400: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
}
FINISH = openai_params.FINISH
CACHE_POLICIES = {
    "": router_pb2.CACHE_POLICY_UNSPECIFIED,
    "default": router_pb2.CACHE_POLICY_UNSPECIFIED,
    "bypass": router_pb2.CACHE_POLICY_BYPASS,
    "no-store": router_pb2.CACHE_POLICY_NO_STORE,
    "refresh": router_pb2.CACHE_POLICY_REFRESH,
}
CACHE_POLICY_HEADER = "x-gearshift-cache-policy"
DEFAULT_LIMITS = InputLimits()
JSON_CONTENT_TYPES = frozenset({"application/json"})


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


class UnsupportedMediaType(GearshiftError):
    """HTTP 415: the body is not declared as JSON."""

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"content-type {content_type or '(none)'!r} is not supported; send application/json",
            "UNSUPPORTED_MEDIA_TYPE",
            code=grpc.StatusCode.INVALID_ARGUMENT,
        )


def _content(value: Any, path: str, violations: list[FieldViolation]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, Mapping) and part.get("type") in ("image_url", "input_image"):
                violations.append(
                    FieldViolation(
                        f"{path}[{j}]",
                        "image input is not carried by the router's contract yet (capability "
                        "vision); send text parts only",
                    )
                )
            else:
                violations.append(FieldViolation(f"{path}[{j}]", "only text parts are supported"))
        return "".join(texts)
    violations.append(FieldViolation(path, "must be a string or a list of text parts"))
    return ""


def _number(body: Mapping[str, Any], name: str, violations: list[FieldViolation]) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        violations.append(FieldViolation(name, "must be a number"))
        return None
    return value


# Parameters that change what the answer must be, which the router's contract cannot
# carry: answering without them would look like success and be wrong (a legacy function
# call answered as text, audio never produced). Neutral values are accepted.
UNSUPPORTED_PARAMS: dict[str, str] = {
    "functions": "legacy function calling is not supported; send `tools` instead",
    "function_call": "legacy function calling is not supported; send `tool_choice` instead",
    "audio": "audio output is not supported",
    "modalities": "only ['text'] is supported",
    "prediction": "predicted outputs are not supported",
}
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "modalities": (["text"],),
    "functions": ([],),
    "function_call": ("none", "auto"),
}


def unsupported_params(body: Mapping[str, Any]) -> list[FieldViolation]:
    """Violations for parameters set to a value the router would otherwise ignore."""
    return [
        FieldViolation(name, f"{why} (set drop_unsupported_params to ignore it)")
        for name, why in UNSUPPORTED_PARAMS.items()
        if body.get(name) is not None and body.get(name) not in _NEUTRAL.get(name, ())
    ]


def parse_chat_request(
    body: Any,
    headers: Mapping[str, str],
    drop_unsupported: bool = False,
    limits: InputLimits = DEFAULT_LIMITS,
    multi_limits: MultiLimits | None = None,
) -> tuple[router_pb2.ChatRequest, bool]:
    """An OpenAI chat completion body as a router ChatRequest, plus whether to stream.

    Parameters the router cannot honour are refused with their names, unless
    `drop_unsupported` (LiteLLM's `drop_params`) says to ignore them. The
    `x-gearshift-multi` header becomes the request's multi-routing policy (its values
    checked against `multi_limits`, so a 400 names the header, not the gRPC field).
    """
    if not isinstance(body, Mapping):
        raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
    violations: list[FieldViolation] = [] if drop_unsupported else unsupported_params(body)
    request = router_pb2.ChatRequest(
        request_id=headers.get("x-request-id", ""), model=str(body.get("model") or "auto")
    )
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        violations.append(FieldViolation("messages", "must be a list of messages"))
        raw_messages = []
    for i, msg in enumerate(raw_messages):
        if not isinstance(msg, Mapping):
            violations.append(FieldViolation(f"messages[{i}]", "must be an object"))
            continue
        request.messages.append(
            common_pb2.ChatMessage(
                role=str(msg.get("role", "")),
                content=_content(msg.get("content"), f"messages[{i}].content", violations),
                name=str(msg.get("name") or ""),
                tool_calls=openai_params.parse_tool_calls(
                    msg.get("tool_calls"), f"messages[{i}].tool_calls", violations
                ),
                tool_call_id=str(msg.get("tool_call_id") or ""),
            )
        )
    openai_params.parse_options(body, request, violations)
    sampling = request.sampling
    # Every number is range-checked before it meets a protobuf field: an integer of 2**64
    # or 1e400 would otherwise raise inside the conversion (a 500, not the client's 400).
    if (temperature := _number(body, "temperature", violations)) is not None:
        if (bad := float_violation("temperature", temperature)) is None:
            sampling.temperature = float(temperature)
        else:
            violations.append(bad)
    if (top_p := _number(body, "top_p", violations)) is not None:
        if (bad := float_violation("top_p", top_p)) is None:
            sampling.top_p = float(top_p)
        else:
            violations.append(bad)
    max_tokens_name = "max_completion_tokens"
    max_tokens = _number(body, max_tokens_name, violations)
    if max_tokens is None:
        max_tokens_name = "max_tokens"
        max_tokens = _number(body, max_tokens_name, violations)
    if max_tokens is not None:
        if (bad := integer_violation(max_tokens_name, max_tokens, 1, 2**32 - 1)) is not None:
            violations.append(bad)
        elif max_tokens > limits.max_tokens_limit:
            violations.append(limits.max_tokens_violation(max_tokens_name))
        else:
            sampling.max_tokens = int(max_tokens)
    if (seed := _number(body, "seed", violations)) is not None:
        if (bad := integer_violation("seed", seed, INT64_MIN, INT64_MAX)) is None:
            sampling.seed = int(seed)
        else:
            violations.append(bad)
    stop = body.get("stop")
    if isinstance(stop, str):
        sampling.stop.append(stop)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        sampling.stop.extend(stop)
    elif stop is not None:
        violations.append(FieldViolation("stop", "must be a string or a list of strings"))
    sampling.logprobs = bool(body.get("logprobs") or False)
    if (top_logprobs := _number(body, "top_logprobs", violations)) is not None:
        if (bad := integer_violation("top_logprobs", top_logprobs, 0, 20)) is None:
            sampling.top_logprobs = int(top_logprobs)
        else:
            violations.append(bad)
    policy = headers.get(CACHE_POLICY_HEADER, "").lower()
    if policy not in CACHE_POLICIES:
        violations.append(
            FieldViolation(CACHE_POLICY_HEADER, f"use one of {', '.join(sorted(CACHE_POLICIES))}")
        )
    else:
        request.cache_policy = CACHE_POLICIES[policy]
    multi = headers.get(MULTI_HEADER)
    if multi is not None:
        try:
            request.multi.CopyFrom(parse_header(multi))
            if multi_limits is not None:
                policy_from_proto(request.multi, multi_limits, prefix=MULTI_HEADER)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    if violations:
        raise InvalidArgument(violations)
    return request, bool(body.get("stream") or False)


def decision_headers(
    decision: router_pb2.RouteDecision, trace_id: str, request_id: str
) -> dict[str, str]:
    headers = {
        "x-gearshift-route": decision.route,
        "x-gearshift-tier": common_pb2.Tier.Name(decision.tier).removeprefix("TIER_").lower(),
        "x-gearshift-cache": common_pb2.CacheOutcome.Name(decision.cache)
        .removeprefix("CACHE_OUTCOME_")
        .lower(),
        "x-gearshift-difficulty": f"{decision.difficulty:.4f}",
        "x-gearshift-threshold": f"{decision.threshold:.4f}",
        "x-gearshift-trace-id": trace_id,
        "x-request-id": request_id,
    }
    if decision.response_id:
        headers["x-gearshift-response-id"] = decision.response_id
    if decision.escalated_from:
        headers["x-gearshift-escalated-from"] = ",".join(decision.escalated_from)
    if decision.source:
        headers["x-gearshift-source"] = decision.source
    if decision.excluded:  # routes left out for a missing capability: "local-slm(tools)"
        headers["x-gearshift-excluded"] = ",".join(
            f"{e.route}({'+'.join(e.missing)})" for e in decision.excluded
        )
    if decision.branches:
        headers["x-gearshift-branches"] = ",".join(
            f"{b.name}={b.status}" for b in decision.branches
        )
        headers["x-gearshift-combine"] = decision.combine
    return headers


def multi_extension(decision: router_pb2.RouteDecision) -> dict[str, Any]:
    """A multi-route answer's plan and outcome: every branch, the combination."""
    return {
        "combine": decision.combine,
        "combine_reason": decision.combine_reason,
        "combined_by": decision.combined_by,
        "branches": [
            {
                "name": b.name,
                "kind": b.kind,
                "route": b.route,
                "model": b.model,
                "tier": common_pb2.Tier.Name(b.tier).removeprefix("TIER_").lower(),
                "status": b.status,
                "error": b.error,
                "latency_ms": round(b.latency_ms, 1),
                "usage": {**_usage(b.usage), "cost_usd": round(b.usage.cost_usd, 8)},
                "score": round(b.score, 6),
            }
            for b in decision.branches
        ],
    }


def gearshift_extension(
    source: str,
    citations: Sequence[router_pb2.Citation],
    decision: router_pb2.RouteDecision | None = None,
) -> dict[str, Any] | None:
    """The `gearshift` extension field: citations of a source answer, a multi-route plan.

    None when there is neither. OpenAI clients ignore unknown top-level fields; the SDKs
    keep them (`model_extra`).
    """
    multi = multi_extension(decision) if decision is not None and decision.branches else None
    if not citations:
        return {"multi": multi} if multi else None
    out: dict[str, Any] = {
        "source": source,
        "citations": [
            {
                "source": c.source,
                "document": c.document_id,
                "document_title": c.document_title,
                "chunk_title": c.chunk_title,
                "chunk_index": c.chunk_index,
                "score": round(c.score, 6),
            }
            for c in citations
        ],
    }
    if multi:
        out["multi"] = multi
    return out


def _usage(usage: common_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_id(decision: router_pb2.RouteDecision, request_id: str) -> str:
    """The OpenAI `id`: `chatcmpl-` + the response id that feedback refers to."""
    return f"chatcmpl-{decision.response_id or request_id}"


def parse_feedback(body: Any) -> router_pb2.FeedbackRequest:
    """A `POST /v1/feedback` body as a FeedbackRequest (types checked, range checked later).

    `{"id": "chatcmpl-...", "score": 0.8}` or `{"id": ..., "rating": "good"|"bad"}`
    (or `"good": true`), optional `other_tier_better` and `comment`.
    """
    if not isinstance(body, Mapping):
        raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
    violations: list[FieldViolation] = []
    request = router_pb2.FeedbackRequest()
    response_id = body.get("id", body.get("response_id"))
    if not isinstance(response_id, str) or not response_id:
        violations.append(FieldViolation("id", "the answer's id (chatcmpl-...) is required"))
    else:
        request.response_id = response_id
    score = body.get("score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float):
            violations.append(FieldViolation("score", "must be a number in [0, 1]"))
        else:
            request.score = float(score)
    rating = body.get("rating", body.get("good"))
    if rating is not None:
        if rating in ("good", "bad"):
            request.good = rating == "good"
        elif isinstance(rating, bool):
            request.good = rating
        else:
            violations.append(FieldViolation("rating", "must be 'good' or 'bad'"))
    other = body.get("other_tier_better")
    if isinstance(other, bool):
        request.other_tier_better = other
    elif other is not None:
        violations.append(FieldViolation("other_tier_better", "must be true or false"))
    comment = body.get("comment", "")
    if not isinstance(comment, str):
        violations.append(FieldViolation("comment", "must be a string"))
    else:
        request.comment = comment
    if violations:
        raise InvalidArgument(violations)
    return request


def _model_name(decision: router_pb2.RouteDecision) -> str:
    return decision.model or decision.route


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
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_body_bytes)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/feedback", self.feedback)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def start(self) -> int:
        # handler_cancellation: a client that disconnects cancels its handler, which
        # cancels the backend call (and the generation) through the pipeline.
        self._runner = http_server.runner(
            self.application(),
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
                "model": _model_name(response.decision),
                "choices": openai_params.choices_json(response, chat.sampling.logprobs),
                "usage": _usage(response.usage),
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
        model = _model_name(first.decision)
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
                        "logprobs": openai_params.logprobs_json(logprobs)
                        if want_logprobs
                        else None,
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
                    delta["tool_calls"] = openai_params.tool_call_deltas_json(chunk.tool_calls)
                    if not chunk.text_delta:
                        delta["content"] = None
                if chunk.index not in started:
                    delta["role"] = "assistant"
                    started.add(chunk.index)
                finish = (
                    openai_params.FINISH.get(chunk.finish_reason) if chunk.finish_reason else None
                )
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
                    "usage": _usage(usage),
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
