"""Shadow judging with the real stand-in large model (a vLLM OpenAI server behind the proxy).

The user's answer comes back before the background judgment ends and is not changed by
it; the judgment asks the large tier for a reference and a grade; a spent daily budget
stops it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gearshift.router.outcomes.records import SOURCE_JUDGE
from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2, router_pb2
from tests.router.conftest import start_router, stop_router
from tests.router.test_router_e2e import AUTH_A, chat_request, unique

pytestmark = pytest.mark.vllm

QUESTION = "What is the capital of France?"


def judgments(result: str) -> float:
    value = REGISTRY.get_sample_value("gearshift_router_shadow_judgments_total", {"result": result})
    return value or 0.0


async def test_shadow_judge_grades_small_answers_in_the_background(
    slm_server: Any, proxy_server: Any, tmp_path: Path
) -> None:
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    router = await start_router(
        tmp_path,
        routes,
        shadow_share=1.0,
        shadow_max_tokens=48,
        difficulty_threshold=1.0,  # every scored query goes to the small tier
    )
    assert router.app.outcomes is not None and router.app.outcomes.shadow is not None
    judge = router.app.outcomes.shadow
    before = {r: judgments(r) for r in ("graded", "unparsed", "failed", "budget_spent")}
    bypass = router_pb2.CACHE_POLICY_BYPASS
    try:
        reply = await router.stub.Chat(
            chat_request(unique(QUESTION), max_tokens=16, policy=bypass),
            metadata=AUTH_A,
            timeout=120,
        )
        assert reply.decision.tier == common_pb2.TIER_SLM
        assert reply.text.strip()
        pending = list(judge._tasks)
        assert len(pending) == 1  # the answer came back while the judgment still runs
        score = await asyncio.wait_for(pending[0], 180)
        assert judge.budget.spent > 0  # the large tier answered and judged
        graded = judgments("graded") - before["graded"]
        unparsed = judgments("unparsed") - before["unparsed"]
        assert (graded, unparsed) in ((1, 0), (0, 1)), (graded, unparsed)
        rows = await router.app.outcomes.store.labelled()
        judged = [r for r in rows if r.decision.response_id == reply.decision.response_id]
        if score is None:  # the 135M stand-in judge gave no readable rating
            assert judged == []
        else:
            assert [(r.outcome.source, r.outcome.score) for r in judged] == [(SOURCE_JUDGE, score)]
        # The day's budget is spent: the next small answer is not judged.
        judge.budget.tokens = judge.budget.spent
        await router.stub.Chat(
            chat_request(unique(QUESTION), max_tokens=8, policy=bypass),
            metadata=AUTH_A,
            timeout=120,
        )
        assert judge._tasks == set()
        assert judgments("budget_spent") == before["budget_spent"] + 1
    finally:
        await stop_router(router)
