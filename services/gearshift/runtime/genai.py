"""Model-call spans with the OpenTelemetry GenAI semantic conventions (`gen_ai.*`).

Every hop that runs or forwards a model call opens one of these, so a trace shows
which model answered, with how many tokens, without any prompt or answer text
(content capture is a separate, explicit opt-in).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from gearshift.runtime.telemetry import tracing_enabled
from gearshift.v1 import common_pb2

_tracer = trace.get_tracer("gearshift.genai")

FINISH_NAMES = {
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
    common_pb2.FINISH_REASON_ABORT: "abort",
    common_pb2.FINISH_REASON_ERROR: "error",
    common_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}


@contextmanager
def model_span(
    *,
    provider: str,
    model: str,
    sampling: common_pb2.SamplingParams | None = None,
    server_address: str = "",
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """Opens a `chat {model}` span carrying the request-side GenAI attributes.

    A process that does not trace gets the invalid span at once (no tracer call, no
    context switch): this wraps every model call on the hot path.
    """
    if not tracing_enabled():
        yield INVALID_SPAN
        return
    with _tracer.start_as_current_span(f"chat {model}", kind=kind) as span:
        if not span.is_recording():
            yield span
            return
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.provider.name", provider)
        span.set_attribute("gen_ai.system", provider)
        span.set_attribute("gen_ai.request.model", model)
        if server_address:
            span.set_attribute("server.address", server_address)
        if sampling is not None:
            if sampling.HasField("max_tokens"):
                span.set_attribute("gen_ai.request.max_tokens", sampling.max_tokens)
            if sampling.HasField("temperature"):
                span.set_attribute("gen_ai.request.temperature", sampling.temperature)
            if sampling.HasField("top_p"):
                span.set_attribute("gen_ai.request.top_p", sampling.top_p)
            if sampling.HasField("seed"):
                span.set_attribute("gen_ai.request.seed", sampling.seed)
        yield span


def record_response(
    span: Span,
    *,
    model: str,
    usage: common_pb2.Usage,
    finish_reason: common_pb2.FinishReason.ValueType,
    response_id: str = "",
) -> None:
    """Adds the response-side GenAI attributes once the answer is complete."""
    if not span.is_recording():
        return
    span.set_attribute("gen_ai.response.model", model)
    span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    span.set_attribute("gen_ai.response.finish_reasons", [FINISH_NAMES.get(finish_reason, "")])
    if response_id:
        span.set_attribute("gen_ai.response.id", response_id)
    if finish_reason == common_pb2.FINISH_REASON_ERROR:
        span.set_status(Status(StatusCode.ERROR))
