"""Multi-routing: what fanning out and combining cost on top of the branches themselves.

Everything runs in one process over loopback gRPC: the router (real embedder, scorer and
selector) in front of a model server that answers after a fixed delay per served model
(20, 60 and 120 ms), so the routes' latencies are known and the router's own overhead is
what varies. Three model routes carry descriptions matching the questions, so a
`max=3` plan has three branches; the slowest (120 ms) is also the large tier, which
judges `best`; the fastest is the model difficulty chooses, which synthesises.

Rows, on the same questions in the same run:
- the slowest branch alone (its route pinned): the baseline;
- the 3-branch plan with each strategy: p50, p50 minus the baseline (the fan-out's and
  the combination's cost), and the synthesis/judge call alone for comparison;
- tokens and cost per request of each strategy (the server reports usage from the
  prompt and answer lengths, ~4 characters a token, and a price per model).

Goal (issue #15): the combination adds no more than the synthesis call itself plus 5 ms
at p50, i.e. multi(synthesize) - slowest - synthesis call <= 5 ms.

Usage: python benchmarks/bench_multi.py [--requests 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_router import StandInApp, StandInBackend

from gearshift.dev.machine import describe_machine
from gearshift.router.app import RouterApp
from gearshift.router.app import Settings as RouterSettings
from gearshift.runtime.server import GrpcServiceHost
from gearshift.v1 import common_pb2, inference_pb2, router_pb2, router_pb2_grpc

KEY = "bench-key"
# served model -> (delay s, $ per token)
MODELS = {"fast-model": (0.020, 1e-7), "medium-model": (0.060, 2e-7), "slow-model": (0.120, 2e-6)}
QUESTIONS = [
    "What does the cache do when the GPU node goes down during an outage?",
    "How should the platform team handle a cache outage on a GPU node?",
    "Compare the runbook for GPU node failures with general cache best practice.",
]


class DelayedBackend(StandInBackend):
    """Answers after the served model's fixed delay, with usage and cost from the lengths."""

    label = "delayed"

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: Any
    ) -> inference_pb2.GenerateResponse:
        delay, price = MODELS[request.model]
        await asyncio.sleep(delay)
        system = request.messages[0].content if request.messages else ""
        if system.startswith("You are a judge"):
            text = "2\nIt answers the question most completely."
        else:
            text = f"B. An answer from {request.model} about caches and GPU nodes."
        prompt = sum(len(m.content) for m in request.messages) // 4
        completion = len(text) // 4
        return inference_pb2.GenerateResponse(
            request_id=request.request_id,
            model=request.model,
            text=text,
            finish_reason=common_pb2.FINISH_REASON_STOP,
            usage=common_pb2.Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cost_usd=(prompt + completion) * price,
            ),
        )


def route(name: str, tier: str, model: str, address: str, priority: int) -> dict[str, Any]:
    return {
        "apiVersion": "gearshift.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": name},
        "spec": {
            "tier": tier,
            "description": "Operating caches and GPU nodes: outages, runbooks, best practice",
            "examples": QUESTIONS[:1],
            "model": {"servedName": model},
            "routing": {"priority": priority, "endpoint": address},
        },
    }


def ask(text: str, model: str = "auto", multi: str = "") -> router_pb2.ChatRequest:
    request = router_pb2.ChatRequest(
        model=model,
        messages=[common_pb2.ChatMessage(role="user", content=text)],
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=64),
        cache_policy=router_pb2.CACHE_POLICY_BYPASS,
    )
    if multi:
        request.multi.combine = multi
        request.multi.max_routes = 3
        request.multi.min_successful = 3
    return request


async def main(n: int) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-multi-")
    backend_settings = RouterSettings(grpc_port=0, metrics_port=-1, http_port=-1)
    backend_host = GrpcServiceHost(StandInApp(DelayedBackend()), backend_settings)
    address = f"127.0.0.1:{await backend_host.start()}"
    routes = [
        route("fast", "slm", "fast-model", address, 0),
        route("medium", "slm", "medium-model", address, 1),
        route("slow", "llm", "slow-model", address, 0),
    ]
    routes_file, keys_file = Path(tmp) / "routes.yaml", Path(tmp) / "keys.yaml"
    routes_file.write_text(yaml.safe_dump_all(routes))
    keys_file.write_text(yaml.safe_dump({KEY: "bench"}))
    settings = RouterSettings(
        grpc_port=0,
        metrics_port=-1,
        http_port=-1,
        routes_file=str(routes_file),
        api_keys_file=str(keys_file),
        outcomes_enabled=False,
        difficulty_threshold=1.0,  # the general (synthesis) model is `fast`
        selection_threshold=0.0,
        multi_margin=1.0,
        multi_max_routes_limit=3,
    )
    app = RouterApp(settings)
    host = GrpcServiceHost(app, settings)
    port = await host.start()
    meta = [("authorization", f"Bearer {KEY}")]
    latencies: dict[str, list[float]] = {}
    tokens: dict[str, list[int]] = {}
    costs: dict[str, list[float]] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        plan = await stub.Route(ask(QUESTIONS[0], multi="concat"), metadata=meta, timeout=60)
        assert len(plan.branches) == 3, (plan.branches, plan.reasons)
        rows = {
            "slowest branch alone (pinned `slow`)": dict(model="slow"),
            "synthesis call alone (pinned `fast`)": dict(model="fast"),
            "judge call alone (pinned `slow`)": dict(model="slow"),
            **{f"3 branches, {s}": dict(multi=s) for s in ("concat", "vote", "best", "synthesize")},
        }
        for _ in range(3):  # warm up every path
            for kw in rows.values():
                await stub.Chat(ask(QUESTIONS[0], **kw), metadata=meta, timeout=60)
        for i in range(n):  # interleaved, so load changes hit every row alike
            question = f"{QUESTIONS[i % len(QUESTIONS)]} ({uuid.uuid4().hex[:6]})"
            # Pinned rows skip the embedding; embed first so no row pays for it alone.
            await app.embedder.embed(question)
            for name, kw in rows.items():
                start = time.perf_counter()
                response = await stub.Chat(ask(question, **kw), metadata=meta, timeout=60)
                latencies.setdefault(name, []).append((time.perf_counter() - start) * 1000)
                tokens.setdefault(name, []).append(response.usage.total_tokens)
                costs.setdefault(name, []).append(response.usage.cost_usd)
                if "multi" in kw:
                    assert all(b.status == "ok" for b in response.decision.branches)
    await host.stop(0)
    await backend_host.stop(0)

    p50 = {name: statistics.median(v) for name, v in latencies.items()}
    base = p50["slowest branch alone (pinned `slow`)"]
    extra_call = {
        "3 branches, synthesize": p50["synthesis call alone (pinned `fast`)"],
        "3 branches, best": p50["judge call alone (pinned `slow`)"],
    }
    print(f"machine: {describe_machine()}")
    print(f"model delays: {', '.join(f'{m} {d * 1000:.0f} ms' for m, (d, _) in MODELS.items())}")
    print(f"{n} requests per row, interleaved\n")
    print(
        "| path | p50 ms | p90 ms | p50 - slowest ms | minus its combining call ms "
        "| tokens/req | cost/req $ |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, lat in latencies.items():
        ordered = sorted(lat)
        over = p50[name] - base
        rest = over - extra_call.get(name, 0.0)
        print(
            f"| {name} | {p50[name]:.1f} | {ordered[int(0.9 * (len(ordered) - 1))]:.1f} | "
            f"{over:+.1f} | {rest:+.1f} | {statistics.mean(tokens[name]):.0f} | "
            f"{statistics.mean(costs[name]):.7f} |"
        )
    synth_over = p50["3 branches, synthesize"] - base - extra_call["3 branches, synthesize"]
    verdict = "met" if synth_over <= 5.0 else "NOT met"
    print(
        f"\ngoal: synthesize adds <= its synthesis call + 5 ms at p50: {verdict} "
        f"({synth_over:+.1f} ms beyond the call)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    asyncio.run(main(args.requests))
