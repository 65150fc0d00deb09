"""Router overhead without generation: cache-hit path, miss path, and hit throughput.

Everything runs in one process over loopback gRPC: the real cache service (usearch
backend), the router (real embedder and scorer), and an echo InferenceService standing in
for the model so generation time is excluded (it answers at once). The floor is a
loopback unary gRPC call to that echo service, measured in the same run.

Rows:
- echo floor: one plain gRPC hop (client -> echo backend).
- cache hit: a repeated question (router -> cache Lookup hit -> answer).
- miss: a new question each time (embedding + cache Lookup miss + scoring + backend call;
  sent with CACHE_POLICY_NO_STORE so the questions stay misses).
- throughput: cache hits / echo calls with 32 in flight.

Usage: python benchmarks/bench_router.py [--requests 400] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from gearshift.cache.app import Settings as CacheSettings
from gearshift.cache.app import build_app as build_cache
from gearshift.dev.machine import describe_machine
from gearshift.router.app import RouterApp
from gearshift.router.app import Settings as RouterSettings
from gearshift.routes.local import local_default_routes
from gearshift.runtime.server import GrpcServiceHost
from gearshift.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)

KEY = "bench-key"


class StandInBackend(inference_pb2_grpc.InferenceServiceServicer):
    """A stand-in model for benchmarks of the router's own cost: subclasses answer
    `Generate`; a stream is that answer in one chunk."""

    label = "stand-in"

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: Any
    ) -> inference_pb2.GenerateResponse:
        raise NotImplementedError

    async def GenerateStream(
        self, request: inference_pb2.GenerateRequest, context: Any
    ) -> AsyncIterator[inference_pb2.GenerateChunk]:
        whole = await self.Generate(request, context)
        yield inference_pb2.GenerateChunk(
            request_id=whole.request_id,
            model=whole.model,
            text_delta=whole.text,
            finish_reason=whole.finish_reason,
            usage=whole.usage,
        )

    async def GetModelInfo(
        self, request: inference_pb2.GetModelInfoRequest, context: Any
    ) -> inference_pb2.ModelInfo:
        return inference_pb2.ModelInfo(model=self.label, backend=self.label, ready=True)


class EchoBackend(StandInBackend):
    """Answers every request at once: a model with zero generation time."""

    label = "echo"

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: Any
    ) -> inference_pb2.GenerateResponse:
        return inference_pb2.GenerateResponse(
            request_id=request.request_id,
            model=request.model,
            text="An answer.",
            finish_reason=common_pb2.FINISH_REASON_STOP,
            usage=common_pb2.Usage(prompt_tokens=10, completion_tokens=3, total_tokens=13),
        )


class StandInApp:
    """Serves one stand-in backend on the shared runtime (`GrpcServiceHost`)."""

    def __init__(self, backend: StandInBackend | None = None) -> None:
        self.backend = backend or EchoBackend()
        self.name = self.backend.label

    def register(self, server: grpc.aio.Server) -> list[str]:
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.backend, server)
        return ["gearshift.v1.InferenceService"]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def serial(call: Callable[[int], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        await call(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


async def throughput(call: Callable[[int], Awaitable[Any]], n: int, concurrency: int) -> float:
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


def write_config(tmp: str, echo: str) -> tuple[str, str]:
    """Routes (both tiers on the echo backend) and one API key."""
    routes_file, keys_file = Path(tmp) / "routes.yaml", Path(tmp) / "keys.yaml"
    routes_file.write_text(yaml.safe_dump_all(local_default_routes(echo, "echo", echo, "echo")))
    keys_file.write_text(yaml.safe_dump({KEY: "bench"}))
    return str(routes_file), str(keys_file)


def request(
    text: str, policy: router_pb2.CachePolicy.ValueType = router_pb2.CACHE_POLICY_UNSPECIFIED
) -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        messages=[common_pb2.ChatMessage(role="user", content=text)],
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=16),
        cache_policy=policy,
    )


async def main(n: int, concurrency: int) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-router-")
    echo_settings = RouterSettings(grpc_port=0, metrics_port=-1, http_port=-1)
    echo_host = GrpcServiceHost(StandInApp(), echo_settings)
    echo_port = await echo_host.start()
    cache_settings = CacheSettings(grpc_port=0, metrics_port=-1, data_dir=f"{tmp}/cache")
    cache_host = GrpcServiceHost(build_cache(cache_settings), cache_settings)
    cache_port = await cache_host.start()
    echo = f"127.0.0.1:{echo_port}"
    routes_file, keys_file = write_config(tmp, echo)
    settings = RouterSettings(
        grpc_port=0,
        metrics_port=-1,
        http_port=-1,
        routes_file=routes_file,
        api_keys_file=keys_file,
        cache_address=f"127.0.0.1:{cache_port}",
        cache_timeout_s=1.0,
        outcomes_dir=f"{tmp}/router",
    )
    router_app = RouterApp(settings)
    router_host = GrpcServiceHost(router_app, settings)
    router_port = await router_host.start()
    meta = [("authorization", f"Bearer {KEY}")]
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{router_port}") as router_channel,
        grpc.aio.insecure_channel(echo) as echo_channel,
    ):
        router = router_pb2_grpc.RouterServiceStub(router_channel)
        backend = inference_pb2_grpc.InferenceServiceStub(echo_channel)
        gen = inference_pb2.GenerateRequest(
            model="echo", messages=[common_pb2.ChatMessage(role="user", content="hi")]
        )
        hit_question = "What is the capital of France?"
        first = await router.Chat(request(hit_question), metadata=meta, timeout=30)
        assert first.decision.cache == common_pb2.CACHE_OUTCOME_MISS, first.decision
        await asyncio.sleep(0.5)  # the background Store lands

        async def echo_call(i: int) -> None:
            await backend.Generate(gen, timeout=10)

        async def hit_call(i: int) -> None:
            r = await router.Chat(request(hit_question), metadata=meta, timeout=10)
            assert r.decision.tier == common_pb2.TIER_CACHE, r.decision

        async def miss_call(i: int) -> None:
            # NO_STORE keeps the cache from learning these near-identical questions, so
            # every one is a real miss (new embedding, lookup, score, backend call).
            r = await router.Chat(
                request(
                    f"Question {uuid.uuid4().hex}: how far is the moon?",
                    router_pb2.CACHE_POLICY_NO_STORE,
                ),
                metadata=meta,
                timeout=10,
            )
            assert r.decision.cache == common_pb2.CACHE_OUTCOME_MISS, r.decision

        async def embed_call(i: int) -> None:
            await router_app.embedder.embed(f"Question {uuid.uuid4().hex}: how far is the moon?")

        for call in (echo_call, hit_call, miss_call):  # warm up
            await serial(call, 20)
        echo_lat = await serial(echo_call, n)
        hit_lat = await serial(hit_call, n)
        miss_lat = await serial(miss_call, max(50, n // 4))
        embed_lat = await serial(embed_call, max(50, n // 4))
        echo_rps = await throughput(echo_call, n * 4, concurrency)
        hit_rps = await throughput(hit_call, n * 4, concurrency)

    await router_host.stop(0)
    await cache_host.stop(0)
    await echo_host.stop(0)

    floor = statistics.median(echo_lat)
    print(f"machine: {describe_machine()}\n")
    print("| path | p50 ms | p99 ms | x echo p50 |")
    print("|---|---:|---:|---:|")
    for name, lat in (
        ("loopback gRPC echo (floor)", echo_lat),
        ("router, cache hit (repeat)", hit_lat),
        ("router, miss (embed + lookup + score + echo backend)", miss_lat),
        ("  of which: embedding a new question", embed_lat),
    ):
        p50 = statistics.median(lat)
        print(f"| {name} | {p50:.2f} | {pct(lat, 0.99):.2f} | {p50 / floor:.1f} |")
    print()
    print(f"| throughput at concurrency {concurrency} | req/s | x echo |")
    print("|---|---:|---:|")
    print(f"| loopback gRPC echo (floor) | {echo_rps:.0f} | 1.00 |")
    print(f"| router, cache hits | {hit_rps:.0f} | {hit_rps / echo_rps:.2f} |")
    goal = statistics.median(hit_lat) < 5.0
    print(f"\ncache-hit p50 goal (< 5 ms): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))
