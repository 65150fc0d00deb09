"""What the SLM server's gRPC layer costs: output tokens/s and TTFT, gRPC vs. engine direct.

One vLLM engine serves both paths, so they are measured on the same engine in the
same run, level by level, back to back:

- gRPC: the SLM server (`SlmApp` on `GrpcServiceHost`) runs in this process; a client
  in a separate process (this script with `--client`) streams requests over loopback,
  as the router would.
- direct: the same `AsyncLLM` is called in this process with the same prompt token ids
  and sampling parameters (what a server without gRPC would do).

At each concurrency level, each path does two runs (order A-B-B-A) of
`concurrency * rounds` requests of `--max-tokens` greedy tokens with `concurrency` in
flight. Output tokens/s = tokens generated /
wall time; TTFT = time from sending a request to its first token (p50).
Goal (issue 3): gRPC throughput at concurrency 32 within 5% of direct.

    python benchmarks/bench_slm.py            # ~5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gearshift.dev.machine import describe_machine

PROMPT = "Write a short story about a robot who learns to paint."


@dataclass
class Result:
    tokens: int
    wall_s: float
    ttft_ms: list[float]
    server_cpu_s: float = 0.0  # CPU of the server process (engine front end + gRPC)
    client_cpu_s: float = 0.0  # CPU of the gRPC client process

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def ttft_p50(self) -> float:
        return statistics.median(self.ttft_ms)


def merge(a: Result, b: Result) -> Result:
    return Result(
        a.tokens + b.tokens,
        a.wall_s + b.wall_s,
        a.ttft_ms + b.ttft_ms,
        a.server_cpu_s + b.server_cpu_s,
        a.client_cpu_s + b.client_cpu_s,
    )


def request(max_tokens: int) -> Any:
    from gearshift.v1 import common_pb2, inference_pb2

    return inference_pb2.GenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content=PROMPT)],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


async def run_level(one: Any, concurrency: int, total: int) -> Result:
    """Runs `total` calls of `one()` (-> (tokens, ttft_ms)) with `concurrency` in flight."""
    queue = list(range(total))
    tokens = 0
    ttfts: list[float] = []

    async def worker() -> None:
        nonlocal tokens
        while queue:
            queue.pop()
            n, ttft = await one()
            tokens += n
            ttfts.append(ttft)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(tokens, time.perf_counter() - start, ttfts)


# -- client process (gRPC path) ---------------------------------------------------------


async def client_main(address: str, concurrency: int, total: int, max_tokens: int) -> None:
    import grpc

    from gearshift.v1 import inference_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def one() -> tuple[int, float]:
            sent = time.perf_counter()
            ttft = 0.0
            tokens = 0
            async for chunk in stub.GenerateStream(request(max_tokens), timeout=600):
                if not ttft and chunk.text_delta:
                    ttft = (time.perf_counter() - sent) * 1000
                if chunk.finish_reason:
                    tokens = chunk.usage.completion_tokens
            return tokens, ttft

        await one()  # connection set up outside the measurement
        cpu = time.process_time()
        result = await run_level(one, concurrency, total)
        cpu = time.process_time() - cpu
    print(
        json.dumps(
            {"tokens": result.tokens, "wall_s": result.wall_s, "ttft": result.ttft_ms, "cpu": cpu}
        )
    )


# -- orchestrator ----------------------------------------------------------------------


def via_grpc(address: str, concurrency: int, total: int, max_tokens: int) -> Result:
    cpu = time.process_time()
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--client",
            address,
            "--concurrency",
            str(concurrency),
            "--requests",
            str(total),
            "--max-tokens",
            str(max_tokens),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    cpu = time.process_time() - cpu
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return Result(data["tokens"], data["wall_s"], data["ttft"], cpu, data["cpu"])


async def direct(engine: Any, concurrency: int, total: int, max_tokens: int) -> Result:
    from gearshift.slm.chat_template import prompt_token_ids
    from gearshift.slm.sampling import to_vllm

    req = request(max_tokens)
    ids = prompt_token_ids(engine.tokenizer, req.messages)

    async def one() -> tuple[int, float]:
        sent = time.perf_counter()
        ttft = 0.0
        tokens = 0
        params = to_vllm(req.sampling, max_tokens)
        async for out in engine.engine.generate(
            engine.engine_input(ids), params, request_id=uuid.uuid4().hex
        ):
            new = len(out.outputs[0].token_ids)
            if new and not ttft:
                ttft = (time.perf_counter() - sent) * 1000
            tokens += new
        return tokens, ttft

    await one()
    cpu = time.process_time()
    result = await run_level(one, concurrency, total)
    result.server_cpu_s = time.process_time() - cpu
    return result


def per_1k(cpu_s: float, tokens: int) -> float:
    return cpu_s * 1000.0 / max(tokens, 1) * 1000.0


async def main(args: argparse.Namespace) -> None:
    from gearshift.runtime.server import GrpcServiceHost
    from gearshift.slm.app import Settings, SlmApp

    settings = Settings(grpc_port=0, metrics_port=-1, log_level="WARNING", log_format="text")
    app = SlmApp(settings)
    host = GrpcServiceHost(app, settings)
    t0 = time.perf_counter()
    port = await host.start()
    ready_s = time.perf_counter() - t0
    assert app.engine is not None
    address = f"127.0.0.1:{port}"
    rows = []
    try:
        for c in args.levels:
            total = max(c * args.rounds, 6)
            # A-B-B-A order, so drift in the machine's load (shared cores) hits both alike.
            g1 = await asyncio.to_thread(via_grpc, address, c, total, args.max_tokens)
            d1 = await direct(app.engine, c, total, args.max_tokens)
            d2 = await direct(app.engine, c, total, args.max_tokens)
            g2 = await asyncio.to_thread(via_grpc, address, c, total, args.max_tokens)
            for name, r in (("grpc", g1), ("direct", d1), ("direct", d2), ("grpc", g2)):
                print(f"  c={c} {name}: {r.tokens_per_s:.1f} tok/s", file=sys.stderr)
            g, d = merge(g1, g2), merge(d1, d2)
            rows.append((c, 2 * total, g, d))
            print(
                f"concurrency {c}: grpc {g.tokens_per_s:.1f} tok/s, direct "
                f"{d.tokens_per_s:.1f} tok/s",
                file=sys.stderr,
            )
    finally:
        await host.stop(5)

    print(f"\nMachine: {describe_machine()}")
    print(
        f"Model: {app.settings.served_model_name or 'smollm2-135m-instruct'} (float32, eager), "
        f"{args.max_tokens} greedy tokens per request, engine ready in {ready_s:.0f} s\n"
    )
    print(
        "| concurrency | requests | gRPC tok/s | direct tok/s | gRPC/direct | "
        "gRPC TTFT p50 ms | direct TTFT p50 ms | server CPU ms/1k tok gRPC / direct | "
        "client CPU ms/1k tok |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, total, g, d in rows:
        print(
            f"| {c} | {total} | {g.tokens_per_s:.1f} | {d.tokens_per_s:.1f} | "
            f"{g.tokens_per_s / d.tokens_per_s:.3f} | {g.ttft_p50:.0f} | {d.ttft_p50:.0f} | "
            f"{per_1k(g.server_cpu_s, g.tokens):.0f} / {per_1k(d.server_cpu_s, d.tokens):.0f} | "
            f"{per_1k(g.client_cpu_s, g.tokens):.0f} |"
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2, help="requests per level = c * rounds")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli = parse()
    if cli.client:
        asyncio.run(client_main(cli.client, cli.concurrency, cli.requests, cli.max_tokens))
    else:
        asyncio.run(main(cli))
