"""The router's source selection and refusals over real gRPC and a real retriever.

No model is called here (dry runs and refusals), so these run without vLLM; the grounded
answers themselves are tested in test_sources_e2e.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gearshift.cli.chat import _explain, add_route_parser
from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2, router_pb2
from tests.router.conftest import KEY_A, RunningRouter, dead_address, start_router, stop_router
from tests.router.test_sources_e2e import HANDBOOK, QUESTION, _ingest, _source

AUTH = (("authorization", f"Bearer {KEY_A}"),)


def _ask(question: str, model: str = "auto") -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        model=model, messages=[common_pb2.ChatMessage(role="user", content=question)]
    )


@pytest.fixture(scope="module")
async def dry_router(
    retriever_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[RunningRouter, str]]:
    handbook = f"handbook-{uuid.uuid4().hex[:8]}"
    await _ingest(retriever_endpoint, handbook, HANDBOOK)
    dead = dead_address()
    routes = local_default_routes(dead, "small", dead, "large")
    routes += [
        _source(
            handbook,
            "Gearshift's handbook: how to configure and operate the semantic cache",
            retriever_endpoint,
            ["How do I configure the cache's similarity threshold?"],
        ),
        _source(
            "runbooks",
            "Runbooks of the platform team: what to do when a GPU node goes down",
            dead_address(),
            ["The GPU node is down, what is the procedure?"],
        ),
    ]
    tmp: Path = tmp_path_factory.mktemp("dry-router")
    running = await start_router(tmp, routes, source_timeout_s=1.0)
    try:
        yield running, handbook
    finally:
        await stop_router(running)


async def test_explain_shows_every_candidate_and_the_reason(
    dry_router: tuple[RunningRouter, str], capsys: pytest.CaptureFixture[str]
) -> None:
    router, handbook = dry_router
    decision = await router.stub.Route(_ask(QUESTION), metadata=AUTH, timeout=30)
    assert decision.source == handbook
    assert decision.candidates[0].name == handbook
    assert {c.kind for c in decision.candidates} == {"source"}
    assert decision.candidates[0].score > decision.candidates[1].score
    assert decision.selection_reason.startswith(f"selected source {handbook}")
    sky = await router.stub.Route(_ask("Why is the sky blue?"), metadata=AUTH, timeout=30)
    assert not sky.source and sky.selection_reason.startswith("no option fits")
    assert sky.route == "local-slm" or sky.route == "local-llm"  # difficulty decides

    # `gearshift route explain` prints the same, one line per candidate.
    import argparse

    parser = argparse.ArgumentParser()
    add_route_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["route", "explain", QUESTION, "--router", router.address, "--api-key", KEY_A]
    )
    assert await _explain(args) == 0
    out = capsys.readouterr().out
    assert f"source:     {handbook}" in out
    assert f"selection:  selected source {handbook}" in out
    assert any(line.split()[:2] == ["source", "runbooks"] for line in out.splitlines())


async def test_pinned_sources_refuse_clearly(dry_router: tuple[RunningRouter, str]) -> None:
    router, _ = dry_router
    with pytest.raises(grpc.aio.AioRpcError) as pinned:
        await router.stub.Chat(_ask("GPU down?", model="runbooks"), metadata=AUTH, timeout=30)
    assert pinned.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "data source 'runbooks' could not be searched" in (pinned.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await router.stub.Chat(_ask("GPU down?", model="runbookz"), metadata=AUTH, timeout=30)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "runbooks" in (unknown.value.details() or "")


async def test_models_list_offers_sources_to_pin(dry_router: tuple[RunningRouter, str]) -> None:
    import aiohttp

    router, handbook = dry_router
    headers = {"authorization": f"Bearer {KEY_A}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{router.http_base}/models", headers=headers) as resp,
    ):
        ids = [m["id"] for m in (await resp.json())["data"]]
    assert handbook in ids and "runbooks" in ids
