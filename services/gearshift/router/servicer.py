"""The gRPC RouterService: Chat, ChatStream and Route on the shared pipeline; Feedback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from gearshift.router.limits import InputLimits, log_refusal
from gearshift.router.outcomes.feedback import OutcomeService
from gearshift.router.pipeline import Pipeline
from gearshift.runtime.api_keys import KeyTable, bearer_of
from gearshift.runtime.errors import FailedPrecondition, GearshiftError, grpc_errors
from gearshift.v1 import router_pb2, router_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """Authenticates from `authorization: Bearer <key>` metadata, then runs the pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        keys: KeyTable,
        limits: InputLimits | None = None,
        outcomes: OutcomeService | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.keys = keys
        self.limits = limits or InputLimits()
        self.outcomes = outcomes

    def _admit(self, request: router_pb2.ChatRequest, context: Context) -> str:
        """Authenticates, then checks the input limits before any work is done."""
        tenant = self.keys.authenticate(bearer_of(context))
        try:
            self.limits.check_chat_request(request)
        except GearshiftError as exc:
            log_refusal("RouterService", exc)
            raise
        return tenant

    @grpc_errors
    async def Chat(
        self, request: router_pb2.ChatRequest, context: Context
    ) -> router_pb2.ChatResponse:
        tenant = self._admit(request, context)
        return await self.pipeline.chat(request, tenant, context.time_remaining())

    @grpc_errors
    async def ChatStream(
        self, request: router_pb2.ChatRequest, context: Context
    ) -> AsyncIterator[router_pb2.ChatStreamChunk]:
        tenant = self._admit(request, context)
        async for chunk in self.pipeline.chat_stream(request, tenant, context.time_remaining()):
            yield chunk

    @grpc_errors
    async def Route(
        self, request: router_pb2.ChatRequest, context: Context
    ) -> router_pb2.RouteDecision:
        tenant = self._admit(request, context)
        return await self.pipeline.route(request, tenant, context.time_remaining())

    @grpc_errors
    async def Feedback(
        self, request: router_pb2.FeedbackRequest, context: Context
    ) -> router_pb2.FeedbackResponse:
        tenant = self.keys.authenticate(bearer_of(context))
        if self.outcomes is None:
            raise FailedPrecondition(
                "outcome recording is off on this router (set outcomes_enabled)",
                reason="OUTCOMES_DISABLED",
            )
        return await self.outcomes.feedback(tenant, request)
