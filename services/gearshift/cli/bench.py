"""`gearshift bench`: replay a realistic query mix against a running mesh.

The mix is fresh benchmark prompts (MMLU and GSM8K from routing_dev.jsonl), exact
repeats of earlier prompts, and paraphrase pairs (Quora duplicates: the first
question, later its paraphrase), sent with bounded concurrency. The report shows
where traffic went and what that saved against sending everything to the large model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gearshift.cli import local_state
from gearshift.dev.data import shared_data_dir
from gearshift.dev.machine import describe_machine
from gearshift.v1 import common_pb2, router_pb2, router_pb2_grpc


@dataclass
class Outcome:
    kind: str  # fresh | repeat | paraphrase
    path: str  # cache | slm | llm | error
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


def add_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="replay a query mix against the running mesh")
    bench.add_argument("--router", default=None, help="router gRPC address")
    bench.add_argument("--api-key", default=None)
    bench.add_argument("--data-dir", type=Path, default=shared_data_dir())
    bench.add_argument("--requests", type=int, default=200)
    bench.add_argument("--concurrency", type=int, default=8)
    bench.add_argument("--max-tokens", type=int, default=16)
    bench.add_argument("--repeat-share", type=float, default=0.25)
    bench.add_argument("--paraphrase-share", type=float, default=0.25)
    bench.add_argument(
        "--large-price",
        type=float,
        nargs=2,
        default=(2.5, 10.0),
        metavar=("IN", "OUT"),
        help="assumed large-model price in USD per million input/output tokens",
    )
    bench.add_argument("--seed", type=int, default=7)
    bench.set_defaults(func=lambda a: asyncio.run(run(a)))


def build_mix(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(kind, prompt) pairs in send order."""
    rng = random.Random(args.seed)
    routing = [json.loads(line) for line in (args.data_dir / "routing_dev.jsonl").open()]
    pairs = [json.loads(line) for line in (args.data_dir / "qqp_pairs_dev.jsonl").open()]
    duplicates = [p for p in pairs if p["duplicate"]]
    rng.shuffle(routing)
    rng.shuffle(duplicates)
    n_para = int(args.requests * args.paraphrase_share) // 2
    n_repeat = int(args.requests * args.repeat_share)
    n_fresh = args.requests - 2 * n_para - n_repeat
    fresh = [("fresh", r["prompt"]) for r in routing[:n_fresh]]
    mix: list[tuple[str, str]] = list(fresh)
    for pair in duplicates[:n_para]:
        mix.insert(rng.randrange(len(mix) + 1), ("fresh", pair["a"]))
    # Repeats and paraphrases go after the first half, so their originals were answered.
    tail: list[tuple[str, str]] = [("repeat", rng.choice(fresh)[1]) for _ in range(n_repeat)]
    tail += [("paraphrase", pair["b"]) for pair in duplicates[:n_para]]
    rng.shuffle(tail)
    return mix + tail


async def _one(
    stub: router_pb2_grpc.RouterServiceAsyncStub,
    kind: str,
    prompt: str,
    args: argparse.Namespace,
    md: Any,
) -> Outcome:
    request = router_pb2.ChatRequest(
        messages=[common_pb2.ChatMessage(role="user", content=prompt)],
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=args.max_tokens),
    )
    start = time.perf_counter()
    try:
        reply = await stub.Chat(request, metadata=md, timeout=300)
    except grpc.aio.AioRpcError:
        return Outcome(kind, "error", (time.perf_counter() - start) * 1000, 0, 0, 0.0)
    elapsed = (time.perf_counter() - start) * 1000
    tier = common_pb2.Tier.Name(reply.decision.tier).removeprefix("TIER_").lower()
    return Outcome(
        kind,
        tier,
        elapsed,
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
        reply.usage.cost_usd,
    )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def report(outcomes: list[Outcome], wall_s: float, args: argparse.Namespace) -> str:
    price_in, price_out = (float(x) for x in args.large_price)
    total = len(outcomes)
    paths = Counter(o.path for o in outcomes)
    lines = [
        f"machine: {describe_machine()}",
        f"requests: {total}, concurrency {args.concurrency}, max_tokens {args.max_tokens}, "
        f"wall {wall_s:.1f} s, {total / wall_s:.2f} req/s",
        "",
        "| path | requests | share | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    by_path: dict[str, list[float]] = defaultdict(list)
    for o in outcomes:
        by_path[o.path].append(o.latency_ms)
    for path in ("cache", "slm", "llm", "error"):
        lat = by_path.get(path, [])
        if lat:
            lines.append(
                f"| {path} | {len(lat)} | {len(lat) / total:.0%} | "
                f"{statistics.median(lat):.0f} | {_pct(lat, 0.99):.0f} |"
            )
    served = [o for o in outcomes if o.path != "error"]
    hits = sum(1 for o in served if o.path == "cache")
    reuse = [o for o in served if o.kind != "fresh"]
    reuse_hits = sum(1 for o in reuse if o.path == "cache")

    def large_cost(o: Outcome) -> float:
        return (o.prompt_tokens * price_in + o.completion_tokens * price_out) / 1e6

    all_large = (
        sum(large_cost(o) for o in served if o.path != "cache")
        / max(1, sum(1 for o in served if o.path != "cache"))
        * len(served)
    )
    mesh = sum(large_cost(o) for o in served if o.path == "llm")
    lines += [
        "",
        f"cache hit rate: {hits / max(1, len(served)):.0%} overall, "
        f"{reuse_hits / max(1, len(reuse)):.0%} of repeats and paraphrases",
        f"large-model calls: {paths['llm'] / max(1, total):.0%} of requests",
        f"cost at ${price_in}/${price_out} per M tokens for the large model: "
        f"mesh ${mesh:.4f} vs all-large ${all_large:.4f} "
        f"({1 - mesh / all_large if all_large else 0:.0%} saved)",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    address = args.router or local_state.router_address()
    key = args.api_key or local_state.local_api_key()
    md = [("authorization", f"Bearer {key}")]
    mix = build_mix(args)
    semaphore = asyncio.Semaphore(args.concurrency)
    outcomes: list[Outcome] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)

        async def send(kind: str, prompt: str) -> None:
            async with semaphore:
                outcomes.append(await _one(stub, kind, prompt, args, md))

        start = time.perf_counter()
        half = len(mix) // 2
        # Originals first, then the half holding repeats and paraphrases.
        await asyncio.gather(*(send(k, p) for k, p in mix[:half]))
        await asyncio.gather(*(send(k, p) for k, p in mix[half:]))
        wall = time.perf_counter() - start
    print(report(outcomes, wall, args))
    return 0 if all(o.path != "error" for o in outcomes) else 1
