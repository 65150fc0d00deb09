"""Input limits of the router's two front doors, checked before any work is done.

One hostile or careless client must not starve the others: a 10 MB body, ten thousand
messages, JSON nested 100,000 deep or an integer of 2**70 is refused here, in
microseconds, with a 4xx (gRPC: INVALID_ARGUMENT or RESOURCE_EXHAUSTED) that names the
limit, before it is parsed into a request, embedded, scored or tokenized. The OpenAI HTTP
API and the gRPC RouterService share these checks; the HTTP server's header limits
(`max_header_bytes`, `max_headers`) are applied by aiohttp's parser.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from gearshift.runtime.errors import FieldViolation, GearshiftError, InvalidArgument
from gearshift.v1 import router_pb2

log = logging.getLogger(__name__)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class RequestTooLarge(GearshiftError):
    """A size limit was hit (HTTP 413; gRPC RESOURCE_EXHAUSTED). Retrying will not help."""

    def __init__(self, limit: str, value: int, maximum: int, what: str) -> None:
        self.limit = limit
        super().__init__(
            f"{what} is {value:,}, above the limit of {maximum:,} (router setting {limit})",
            "REQUEST_TOO_LARGE",
            {"limit": limit, "maximum": str(maximum)},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )


@dataclass(frozen=True)
class InputLimits:
    """The bounds; every one is a router setting of the same name (see docs/router.md)."""

    max_body_bytes: int = 2 * 1024 * 1024
    max_messages: int = 256
    max_message_chars: int = 400_000
    max_json_depth: int = 32
    max_tokens_limit: int = 131_072
    max_header_bytes: int = 16_384
    max_headers: int = 128

    def check_body_size(self, size: int) -> None:
        if size > self.max_body_bytes:
            raise RequestTooLarge(
                "max_body_bytes", size, self.max_body_bytes, "the request body's size in bytes"
            )

    def check_json(self, body: Any) -> None:
        """Depth, and text that cannot be UTF-8 (lone surrogates such as "\\ud800").

        One iterative walk (no recursion to exhaust) over an already size-bounded body.
        """
        stack: list[tuple[Any, int, str]] = [(body, 1, "body")]
        while stack:
            value, depth, path = stack.pop()
            if isinstance(value, dict | list):
                if depth > self.max_json_depth:
                    raise InvalidArgument(
                        [
                            FieldViolation(
                                "body",
                                f"JSON is nested deeper than {self.max_json_depth} levels "
                                "(router setting max_json_depth)",
                            )
                        ]
                    )
                items = value.items() if isinstance(value, dict) else enumerate(value)
                for key, item in items:
                    if isinstance(key, str):
                        _require_utf8(key, path)
                    stack.append((item, depth + 1, f"{path}.{key}" if path != "body" else str(key)))
            elif isinstance(value, str):
                _require_utf8(value, path)

    def check_openai_body(self, body: Mapping[str, Any]) -> None:
        """Message count and length of an OpenAI chat body, before it becomes a request."""
        messages = body.get("messages")
        if not isinstance(messages, list):
            return  # the parser names this precisely
        self._check_count(len(messages))
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping):
                continue
            content = message.get("content")
            if isinstance(content, str):
                self._check_chars(i, len(content))
            elif isinstance(content, list):
                chars = sum(
                    len(part["text"])
                    for part in content
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str)
                )
                self._check_chars(i, chars)

    def check_chat_request(self, request: router_pb2.ChatRequest) -> None:
        """The same bounds for a gRPC ChatRequest (its byte size is gRPC's own limit)."""
        self._check_count(len(request.messages))
        for i, message in enumerate(request.messages):
            self._check_chars(i, len(message.content))
        sampling = request.sampling
        if sampling.HasField("max_tokens") and sampling.max_tokens > self.max_tokens_limit:
            raise InvalidArgument([self.max_tokens_violation("sampling.max_tokens")])

    def max_tokens_violation(self, field: str) -> FieldViolation:
        return FieldViolation(
            field, f"must be at most {self.max_tokens_limit} (router setting max_tokens_limit)"
        )

    def _check_count(self, count: int) -> None:
        if count > self.max_messages:
            raise RequestTooLarge(
                "max_messages", count, self.max_messages, "the number of messages"
            )

    def _check_chars(self, index: int, chars: int) -> None:
        if chars > self.max_message_chars:
            raise RequestTooLarge(
                "max_message_chars",
                chars,
                self.max_message_chars,
                f"the length of messages[{index}] in characters",
            )


def _require_utf8(text: str, path: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            [
                FieldViolation(
                    path,
                    f"contains {text[exc.start : exc.start + 1]!a} at index {exc.start}, a lone "
                    "surrogate that is not valid Unicode text",
                )
            ]
        ) from None


def integer_violation(name: str, value: Any, low: int, high: int) -> FieldViolation | None:
    """None if `value` is an integer (or integral float) in [low, high]."""
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return FieldViolation(name, "must be an integer")
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return FieldViolation(name, "must be an integer")
    if not low <= value <= high:
        return FieldViolation(name, f"must be between {low} and {high}")
    return None


def float_violation(name: str, value: Any) -> FieldViolation | None:
    """None if `value` converts to a finite float."""
    try:
        if math.isfinite(float(value)):
            return None
    except OverflowError:
        pass
    return FieldViolation(name, "is out of range")


def log_refusal(front_door: str, exc: GearshiftError) -> None:
    """One line at WARNING (no traceback): a refused request is the client's problem."""
    log.warning("%s refused a request: %s", front_door, exc.message[:300])
