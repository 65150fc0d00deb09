"""Answer-aware escalation through the real router, SLM server (vLLM) and LLM proxy.

The cascade judges the small model's answer with the escalation estimator: with a fixed
threshold of 0 every answer is sent up, with 1 none is; on streams the first
`cascade_stream_chars` characters are held back and judged before anything is sent.
"""

from __future__ import annotations

from typing import Any

import pytest

from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2, router_pb2
from tests.router.conftest import KEY_A, LLM_ROUTE, SLM_ROUTE, start_router, stop_router

pytestmark = pytest.mark.vllm

AUTH = [("authorization", f"Bearer {KEY_A}")]
QUESTION = "Name a colour."


def _request(max_tokens: int = 12) -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        model="auto",
        messages=[common_pb2.ChatMessage(role="user", content=QUESTION)],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
        cache_policy=router_pb2.CACHE_POLICY_BYPASS,
    )


async def test_cascade_keeps_or_escalates_by_the_estimators_threshold(
    slm_server: Any, proxy_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    for threshold, expected in ((1.0, SLM_ROUTE), (0.0, LLM_ROUTE)):
        running = await start_router(
            tmp_path_factory.mktemp("router-escalation"),
            routes,
            difficulty_threshold=1.0,  # the difficulty scorer always picks the slm tier
            cascade=True,
            cascade_threshold=threshold,
        )
        try:
            response = await running.stub.Chat(_request(), metadata=AUTH, timeout=120)
            verdicts = [r for r in response.decision.reasons if r.startswith("cascade:")]
            assert response.decision.route == expected, response.decision.reasons
            assert verdicts and SLM_ROUTE in verdicts[0]
            assert response.text
            if expected == LLM_ROUTE:
                assert list(response.decision.escalated_from) == [SLM_ROUTE]
            else:
                assert not response.decision.escalated_from

            # Streams: the held-back start of the slm answer is judged before any text.
            chunks = [
                c async for c in running.stub.ChatStream(_request(), metadata=AUTH, timeout=120)
            ]
            first = chunks[0]
            assert first.decision.route == expected, first.decision.reasons
            assert any(r.startswith("cascade:") for r in first.decision.reasons)
            assert "".join(c.text_delta for c in chunks)
            assert chunks[-1].finish_reason in (
                common_pb2.FINISH_REASON_STOP,
                common_pb2.FINISH_REASON_LENGTH,
            )
        finally:
            await stop_router(running)
