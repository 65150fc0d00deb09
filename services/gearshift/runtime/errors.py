"""One error model for every service.

Handlers raise a `GearshiftError`; the `grpc_errors` decorator turns it into a
gRPC status with google.rpc details (BadRequest field violations, RetryInfo,
ErrorInfo), so every client library can read what went wrong and what to do.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger(__name__)

ERROR_DOMAIN = "gearshift.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (`messages[0].role`) and what is wrong with it."""

    field: str
    description: str


@dataclass
class GearshiftError(Exception):
    """Base of all errors that become a gRPC status."""

    message: str
    reason: str = "ERROR"
    metadata: dict[str, str] = field(default_factory=dict)
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __str__(self) -> str:
        return self.message

    def details(self) -> list[Any]:
        """google.rpc detail messages attached to the status."""
        return [
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
            )
        ]

    def to_status(self) -> grpc.Status:
        packed = []
        for detail in self.details():
            any_msg = any_pb2.Any()
            any_msg.Pack(detail)
            packed.append(any_msg)
        proto = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        status: grpc.Status = rpc_status.to_status(proto)
        return status


class InvalidArgument(GearshiftError):
    """Bad input: names every bad field."""

    def __init__(self, violations: Sequence[FieldViolation], message: str = "") -> None:
        self.violations = list(violations)
        text = message or "invalid request: " + "; ".join(
            f"{v.field}: {v.description}" for v in self.violations
        )
        super().__init__(text, "INVALID_ARGUMENT", code=grpc.StatusCode.INVALID_ARGUMENT)

    def details(self) -> list[Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        return [bad, *super().details()]


class NotFound(GearshiftError):
    def __init__(self, message: str, reason: str = "NOT_FOUND") -> None:
        super().__init__(message, reason, code=grpc.StatusCode.NOT_FOUND)


class ResourceExhausted(GearshiftError):
    """A limit was hit; `retry_after_s` tells the caller when to try again."""

    def __init__(self, message: str, retry_after_s: float, reason: str = "RATE_LIMITED") -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, reason, code=grpc.StatusCode.RESOURCE_EXHAUSTED)

    def details(self) -> list[Any]:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after_s * 1e9))
        return [error_details_pb2.RetryInfo(retry_delay=delay), *super().details()]


class Unavailable(GearshiftError):
    """A dependency is down; callers may retry or fall back."""

    def __init__(self, message: str, reason: str = "UNAVAILABLE") -> None:
        super().__init__(message, reason, code=grpc.StatusCode.UNAVAILABLE)


class DeadlineExceeded(GearshiftError):
    def __init__(self, message: str, reason: str = "DEADLINE_EXCEEDED") -> None:
        super().__init__(message, reason, code=grpc.StatusCode.DEADLINE_EXCEEDED)


class Unauthenticated(GearshiftError):
    def __init__(self, message: str, reason: str = "UNAUTHENTICATED") -> None:
        super().__init__(message, reason, code=grpc.StatusCode.UNAUTHENTICATED)


class PermissionDenied(GearshiftError):
    def __init__(self, message: str, reason: str = "PERMISSION_DENIED") -> None:
        super().__init__(message, reason, code=grpc.StatusCode.PERMISSION_DENIED)


class FailedPrecondition(GearshiftError):
    def __init__(self, message: str, reason: str = "FAILED_PRECONDITION") -> None:
        super().__init__(message, reason, code=grpc.StatusCode.FAILED_PRECONDITION)


def field_violations(error: grpc.aio.AioRpcError | grpc.RpcError) -> list[FieldViolation]:
    """Reads the BadRequest violations out of a received error (client side)."""
    status = rpc_status.from_call(cast(grpc.Call, error))
    if status is None:
        return []
    out: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return out


def retry_delay_s(error: grpc.aio.AioRpcError | grpc.RpcError) -> float | None:
    """Reads RetryInfo out of a received error (client side)."""
    status = rpc_status.from_call(cast(grpc.Call, error))
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToNanoseconds()) / 1e9
    return None


_ = code_pb2  # re-exported for callers comparing numeric codes

F = TypeVar("F", bound=Callable[..., Any])


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if isinstance(exc, GearshiftError):
        await context.abort_with_status(exc.to_status())
    log.exception("unhandled error in handler", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")


def grpc_errors(handler: F) -> F:
    """Maps `GearshiftError` (and unexpected exceptions) raised by a handler to a status.

    Works for unary handlers and server-streaming async generators alike.
    """
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream_wrapper(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in handler(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, exc)

        return cast(F, stream_wrapper)

    @functools.wraps(handler)
    async def unary_wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return await cast(Callable[..., Awaitable[Any]], handler)(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc)

    return cast(F, unary_wrapper)
