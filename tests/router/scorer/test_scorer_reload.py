"""New scorer weights are picked up by a running router, without a restart.

Requests in flight when the file changes finish as they were decided; requests after it
use the new weights; a broken file is refused and the running scorer kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from gearshift.router.scorer import DEFAULT_WEIGHTS, ScorerWeights
from gearshift.routes.local import local_default_routes
from gearshift.v1 import router_pb2
from tests.router.conftest import start_router, stop_router
from tests.router.test_router_e2e import AUTH_A, EASY, HARD, chat_request, unique

pytestmark = pytest.mark.vllm


def reloads(result: str) -> float:
    value = REGISTRY.get_sample_value("gearshift_router_scorer_reloads_total", {"result": result})
    return value or 0.0


def write_atomically(path: Path, weights: ScorerWeights) -> None:
    """As `gearshift scorer train` (and a ConfigMap update) do: write aside, rename."""
    tmp = path.with_name("incoming.npz")
    weights.save(tmp)
    tmp.replace(path)


async def test_weights_swap_while_requests_are_in_flight(
    slm_server: Any, proxy_server: Any, tmp_path: Path
) -> None:
    weights_file = tmp_path / "weights.npz"
    shutil.copyfile(DEFAULT_WEIGHTS, weights_file)
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    router = await start_router(
        tmp_path, routes, scorer_weights=str(weights_file), scorer_reload_interval_s=0.1
    )
    try:
        before = await router.stub.Route(chat_request(HARD), metadata=AUTH_A, timeout=30)
        assert before.threshold > 0.0
        loaded = reloads("loaded")
        bypass = router_pb2.CACHE_POLICY_BYPASS

        async def ask() -> router_pb2.ChatResponse:
            request = chat_request(unique(EASY), max_tokens=24, policy=bypass)
            reply: router_pb2.ChatResponse = await router.stub.Chat(
                request, metadata=AUTH_A, timeout=120
            )
            return reply

        in_flight = [asyncio.create_task(ask()) for _ in range(4)]
        await asyncio.sleep(0.3)  # all four are planned and generating
        assert not any(task.done() for task in in_flight)
        # New weights whose calibration puts every query at or above the threshold.
        old = ScorerWeights.load(weights_file)
        write_atomically(weights_file, dataclasses.replace(old, quantiles=np.zeros(1001)))
        replies = await asyncio.gather(*in_flight)
        assert all(r.text for r in replies)
        assert {r.decision.threshold for r in replies} == {before.threshold}
        for _ in range(50):
            if reloads("loaded") > loaded:
                break
            await asyncio.sleep(0.1)
        after = await router.stub.Route(chat_request(EASY), metadata=AUTH_A, timeout=30)
        assert after.threshold == 0.0 and reloads("loaded") == loaded + 1
        # A broken file is refused; the router keeps scoring with the last good weights.
        invalid = reloads("invalid")
        broken = tmp_path / "broken.npz"
        broken.write_bytes(b"not an npz file")
        broken.replace(weights_file)
        for _ in range(50):
            if reloads("invalid") > invalid:
                break
            await asyncio.sleep(0.1)
        assert reloads("invalid") == invalid + 1
        still = await router.stub.Route(chat_request(EASY), metadata=AUTH_A, timeout=30)
        assert still.threshold == 0.0
    finally:
        await stop_router(router)
