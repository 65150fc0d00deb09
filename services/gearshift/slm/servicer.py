"""The InferenceService contract on top of vLLM's async engine.

Every call becomes one engine request; the engine batches them continuously, so
nothing here serialises requests. Unary and streaming calls share one generation
loop (`_generate`), which is why a streamed answer concatenates to exactly the unary
answer for the same greedy request.

Cancellation: when the client cancels or its deadline expires, gRPC cancels the
handler; the loop's `finally` aborts the engine request explicitly (the engine would
otherwise keep generating for nobody while a streaming handler sits at a `yield`),
and counts the abort by cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import trace

from gearshift.runtime.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
    grpc_errors,
)
from gearshift.runtime.validation import require_valid_chat
from gearshift.slm.chat_template import prompt_token_ids
from gearshift.slm.engine import SlmEngine
from gearshift.slm.sampling import to_vllm, token_budget
from gearshift.slm.tools import ToolMode, forced_calls, parsed_calls, tool_dicts, tool_mode
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)

# No tokenizer turns more than this many characters into one token on average; a prompt
# longer than context * this cannot fit and is refused before tokenization.
MAX_CHARS_PER_TOKEN = 32
_TOKENIZER_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer")

BACKEND = "vllm"
DEADLINE_SLACK_S = 0.2

FINISH_REASONS = {
    "stop": common_pb2.FINISH_REASON_STOP,
    "length": common_pb2.FINISH_REASON_LENGTH,
    "abort": common_pb2.FINISH_REASON_ABORT,
    "error": common_pb2.FINISH_REASON_ERROR,
}


@dataclass
class Piece:
    """What one engine step added to one answer (`index` of n)."""

    index: int = 0
    text: str = ""
    logprobs: list[common_pb2.TokenLogprob] = field(default_factory=list)
    finish_reason: common_pb2.FinishReason.ValueType = common_pb2.FINISH_REASON_UNSPECIFIED
    completion_tokens: int = 0


@dataclass
class Call:
    """One admitted request: ids, token counts and timing."""

    request_id: str
    engine_id: str
    prompt_tokens: int
    received: float
    first_token_ms: float = 0.0
    completion_tokens: int = 0

    def usage(self) -> common_pb2.Usage:
        return common_pb2.Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )


def convert_logprobs(
    token_ids: Sequence[int], logprobs: Any, top_k: int
) -> list[common_pb2.TokenLogprob]:
    """vLLM's per-position {token_id: Logprob} dicts → the contract's TokenLogprob list."""
    out: list[common_pb2.TokenLogprob] = []
    if not logprobs:
        return out
    for token_id, position in zip(token_ids, logprobs, strict=False):
        chosen = position.get(token_id)
        if chosen is None:
            continue
        alternatives = sorted(
            (lp for lp in position.values() if lp.rank is not None and lp.rank <= top_k),
            key=lambda lp: lp.rank,
        )[:top_k]
        out.append(
            common_pb2.TokenLogprob(
                token=chosen.decoded_token or "",
                logprob=max(float(chosen.logprob), -1e30),
                top=[
                    common_pb2.TopLogprob(
                        token=alt.decoded_token or "", logprob=max(float(alt.logprob), -1e30)
                    )
                    for alt in alternatives
                ],
            )
        )
    return out


def as_invalid_argument(exc: BaseException) -> InvalidArgument | None:
    """vLLM's own request validation errors (ValueError / VLLMClientError) as INVALID_ARGUMENT,
    so a caller is told to fix its request rather than to retry elsewhere."""
    client_error = any(c.__name__ == "VLLMClientError" for c in type(exc).__mro__)
    if not (client_error or isinstance(exc, ValueError)):
        return None
    parameter = getattr(exc, "parameter", None)
    path = f"sampling.{parameter}" if parameter else "sampling"
    return InvalidArgument([FieldViolation(path, str(exc))])


def _abort_cause(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Deadline or plain cancel? The client's own timer fires a moment before the
    server's (the deadline travels as a relative timeout), so "almost expired" counts."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= DEADLINE_SLACK_S:
        return "deadline"
    return "cancelled"


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Generate / GenerateStream / GetModelInfo for the one served model."""

    def __init__(
        self,
        engine: Callable[[], SlmEngine | None],
        served_name: Callable[[], str],
        max_tokens_default: int = 0,
        tool_parser: str = "",
    ) -> None:
        self._engine = engine
        self._served_name = served_name
        self._max_tokens_default = max_tokens_default
        self._tool_parser = tool_parser

    def _ready_engine(self) -> SlmEngine:
        engine = self._engine()
        if engine is not None and engine.dead:
            raise Unavailable(
                "the model's engine has died; this server is restarting", reason="ENGINE_DEAD"
            )
        if engine is None or not engine.warm:
            raise Unavailable("the model is still loading", reason="ENGINE_LOADING")
        return engine

    async def _admit(
        self, engine: SlmEngine, request: inference_pb2.GenerateRequest
    ) -> tuple[Call, Any, ToolMode]:
        """Validates, resolves the model, tokenizes (off the event loop) and sizes the answer."""
        received = time.perf_counter()
        require_valid_chat(
            request.messages,
            request.sampling,
            tools=request.tools,
            tool_choice=request.tool_choice,
        )
        mode = tool_mode(request, self._tool_parser)
        if request.model and request.model != engine.served_name:
            raise NotFound(
                f"model {request.model!r} is not served here; this server serves "
                f"{engine.served_name!r}",
                reason="MODEL_NOT_SERVED",
            )
        chars = sum(len(m.content) for m in request.messages)
        if chars > engine.max_model_len * MAX_CHARS_PER_TOKEN:
            # Cannot fit however it tokenizes: refused without spending seconds on it.
            raise InvalidArgument(
                [
                    FieldViolation(
                        "messages",
                        f"the prompt is {chars:,} characters; the model's context is "
                        f"{engine.max_model_len} tokens (at most "
                        f"{engine.max_model_len * MAX_CHARS_PER_TOKEN:,} characters)",
                    )
                ]
            )
        # In one worker thread (a Hugging Face tokenizer is not safe to share between
        # threads): a long prompt no longer stalls every other call on the event loop.
        template_tools = tool_dicts(request.tools) if mode.kind == "auto" else None
        ids = await asyncio.get_running_loop().run_in_executor(
            _TOKENIZER_THREAD, prompt_token_ids, engine.tokenizer, request.messages, template_tools
        )
        sampling = request.sampling
        budget = token_budget(
            len(ids),
            engine.max_model_len,
            sampling.max_tokens if sampling.HasField("max_tokens") else None,
            self._max_tokens_default,
        )
        request_id = request.request_id or uuid.uuid4().hex
        call = Call(
            request_id=request_id,
            engine_id=f"{request_id}-{uuid.uuid4().hex[:12]}",
            prompt_tokens=len(ids),
            received=received,
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("gen_ai.system", BACKEND)
            span.set_attribute("gen_ai.request.model", engine.served_name)
            span.set_attribute("gen_ai.request.max_tokens", budget.max_tokens)
            span.set_attribute("gen_ai.usage.input_tokens", len(ids))
        try:
            params = to_vllm(
                sampling,
                budget.max_tokens,
                forced_schema=mode.schema,
                keep_special_tokens=mode.kind == "auto",
            )
        except Exception as exc:
            refused = as_invalid_argument(exc)
            if refused is None:
                raise
            raise refused from exc
        return call, (ids, params), mode

    async def _generate(
        self,
        engine: SlmEngine,
        call: Call,
        prompt: Any,
        top_k: int,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncGenerator[Piece, None]:
        """Runs one engine request, yielding what each step adds; aborts it if left early."""
        ids, params = prompt
        tracker = engine.load
        tracker.request_started()
        finished = False
        finish = "abort"
        cause = ""
        stream: AsyncGenerator[Any, None] | None = None
        try:
            stream = engine.engine.generate(
                engine.engine_input(ids), params, request_id=call.engine_id
            )
            async for out in stream:
                # One output per answer (n > 1 gives several, each with its own index).
                for completion in out.outputs:
                    new_ids = list(completion.token_ids)
                    if new_ids and not call.first_token_ms:
                        call.first_token_ms = (time.perf_counter() - call.received) * 1000.0
                        tracker.record_ttft(call.first_token_ms)
                    call.completion_tokens += len(new_ids)
                    piece = Piece(
                        index=completion.index,
                        text=completion.text,
                        logprobs=convert_logprobs(new_ids, completion.logprobs, top_k),
                        completion_tokens=len(new_ids),
                    )
                    if completion.finish_reason is not None:
                        finish = completion.finish_reason
                        piece.finish_reason = FINISH_REASONS.get(
                            finish, common_pb2.FINISH_REASON_STOP
                        )
                    yield piece
                if out.finished:
                    finished = True
        except Exception as exc:
            cause = "error"
            refused = as_invalid_argument(exc)
            if refused is not None:
                raise refused from exc
            log.error("generation %s failed: %s", call.request_id, type(exc).__name__)
            raise Unavailable(f"the engine failed: {type(exc).__name__}") from exc
        finally:
            if not finished:
                # Cancelled, deadline expired, failed, or the consumer stopped reading:
                # free the engine slot now rather than when the generator is collected.
                await self._abort(engine, call, cause or _abort_cause(context))
            if stream is not None:
                await stream.aclose()
            tracker.request_ended(finish)
            span = trace.get_current_span()
            span.set_attribute("gen_ai.usage.output_tokens", call.completion_tokens)
            span.set_attribute("gen_ai.response.finish_reasons", [finish])

    async def _abort(self, engine: SlmEngine, call: Call, cause: str) -> None:
        engine.load.record_abort(cause)
        try:
            await engine.engine.abort(call.engine_id)
        except Exception:
            log.exception("could not abort engine request %s", call.request_id)

    @grpc_errors
    async def Generate(
        self,
        request: inference_pb2.GenerateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> inference_pb2.GenerateResponse:
        engine = self._ready_engine()
        call, prompt, mode = await self._admit(engine, request)
        answers: dict[int, common_pb2.Choice] = {}
        pieces = self._generate(engine, call, prompt, request.sampling.top_logprobs, context)
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                answer = answers.setdefault(piece.index, common_pb2.Choice(index=piece.index))
                answer.text += piece.text
                answer.logprobs.extend(piece.logprobs)
                if piece.finish_reason:
                    answer.finish_reason = piece.finish_reason
        choices = [answers[i] for i in sorted(answers)] or [common_pb2.Choice()]
        for choice in choices:
            self._tool_calls(engine, mode, choice)
        first = choices[0]
        return inference_pb2.GenerateResponse(
            request_id=call.request_id,
            model=engine.served_name,
            text=first.text,
            finish_reason=first.finish_reason,
            usage=call.usage(),
            logprobs=first.logprobs,
            time_to_first_token_ms=call.first_token_ms,
            tool_calls=first.tool_calls,
            choices=choices if len(choices) > 1 else [],
        )

    def _tool_calls(self, engine: SlmEngine, mode: ToolMode, choice: common_pb2.Choice) -> None:
        """Turns a finished answer's text into tool calls, when the request has tools."""
        if mode.kind == "none":
            return
        if mode.kind == "forced":
            calls = forced_calls(mode, choice.text)
            text = ""
        else:
            text, calls = parsed_calls(mode, self._tool_parser, engine.tokenizer, choice.text)
        if not calls:  # no call made, or a forced one cut off mid-JSON (finish LENGTH)
            return
        choice.text = text
        choice.tool_calls.extend(calls)
        if choice.finish_reason == common_pb2.FINISH_REASON_STOP:
            choice.finish_reason = common_pb2.FINISH_REASON_TOOL_CALLS

    @grpc_errors
    async def GenerateStream(
        self,
        request: inference_pb2.GenerateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[inference_pb2.GenerateChunk]:
        engine = self._ready_engine()
        call, prompt, mode = await self._admit(engine, request)
        n = max(1, request.sampling.n)
        open_answers = set(range(n))
        held: dict[int, common_pb2.Choice] = {}  # tools: text parsed at the end of the answer
        pieces = self._generate(engine, call, prompt, request.sampling.top_logprobs, context)
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                done = piece.finish_reason != common_pb2.FINISH_REASON_UNSPECIFIED
                if done:
                    open_answers.discard(piece.index)
                last = done and not open_answers
                chunk = inference_pb2.GenerateChunk(
                    request_id=call.request_id,
                    model=engine.served_name,
                    index=piece.index,
                    text_delta=piece.text,
                    logprobs=piece.logprobs,
                    finish_reason=piece.finish_reason,
                    usage=call.usage() if last else None,
                )
                if mode.kind != "none":
                    # The calls are known only once the answer is complete: hold its text.
                    answer = held.setdefault(piece.index, common_pb2.Choice(index=piece.index))
                    answer.text += piece.text
                    chunk.text_delta = ""
                    if not done:
                        if piece.logprobs:
                            yield chunk
                        continue
                    answer.finish_reason = piece.finish_reason
                    self._tool_calls(engine, mode, answer)
                    chunk.text_delta = answer.text
                    chunk.finish_reason = answer.finish_reason
                    chunk.tool_calls.extend(
                        common_pb2.ToolCallDelta(
                            index=i, id=c.id, name=c.name, arguments=c.arguments
                        )
                        for i, c in enumerate(answer.tool_calls)
                    )
                elif not (piece.text or piece.logprobs or done):
                    continue  # the detokenizer held text back (partial character, stop prefix)
                yield chunk

    @grpc_errors
    async def GetModelInfo(
        self,
        request: inference_pb2.GetModelInfoRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> inference_pb2.ModelInfo:
        engine = self._engine()
        if engine is None:
            return inference_pb2.ModelInfo(model=self._served_name(), backend=BACKEND, ready=False)
        if engine.dead:
            return inference_pb2.ModelInfo(model=engine.served_name, backend=BACKEND, ready=False)
        snap = engine.load.snapshot()
        return inference_pb2.ModelInfo(
            model=engine.served_name,
            backend=BACKEND,
            max_context_tokens=engine.max_model_len,
            ready=engine.warm,
            load=inference_pb2.LoadReport(
                running_requests=snap.running_requests,
                waiting_requests=snap.waiting_requests,
                kv_cache_usage=snap.kv_cache_usage,
                generated_tokens_per_second=snap.generated_tokens_per_second,
                time_to_first_token_p50_ms=snap.time_to_first_token_p50_ms,
            ),
        )
