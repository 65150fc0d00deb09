"""The latency a source answer adds over a plain model answer, through the real services.

    flock /tmp/gearshift-vllm.lock python benchmarks/bench_source_answer.py [--rounds 2]

A `gearshift serve retriever` process (embedded backend) holds the project's docs/ as
source `gearshift-docs` (real embeddings); this process then starts the real SLM server
(vLLM CPU engine, the project's small model) and a real router over loopback gRPC, with
one model route (the SLM), so both kinds of answer come from the same model. Each
question (the 24 questions of bench_retriever.py, about docs/) is asked once per round
as each kind, in alternating order:

- plain: `model: local-slm` (the model answers from the question alone);
- source: `model: gearshift-docs` (the router searches the source, builds the grounded
  prompt with the passages, and the same model answers it with citations).

Both stream with temperature 0 and the same `max_tokens`, with the cache bypassed. The
table gives time to the first text chunk (search + prompt building + the longer prompt's
prefill) and the whole answer, p50/p99, and the extra of source over plain, measured in
the same run. Generated token counts are printed too: the answers differ in length.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_retriever import QUESTIONS

from gearshift.dev.machine import describe_machine
from gearshift.router.app import RouterApp
from gearshift.router.app import Settings as RouterSettings
from gearshift.routes.local import LOCAL_SLM_ROUTE, local_default_routes
from gearshift.runtime.server import GrpcServiceHost
from gearshift.slm.app import Settings as SlmSettings
from gearshift.slm.app import SlmApp
from gearshift.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc, router_pb2, router_pb2_grpc

DOCS = Path(__file__).resolve().parents[1] / "docs"
SOURCE = "gearshift-docs"
KEY = "bench-key"
AUTH = (("authorization", f"Bearer {KEY}"),)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def ingest_docs(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retriever_pb2_grpc.RetrieverServiceStub(channel)

        async def documents() -> AsyncIterator[retriever_pb2.IngestDocument]:
            for path in sorted(DOCS.glob("*.md")):
                yield retriever_pb2.IngestDocument(
                    source=SOURCE, document_id=path.name, text=path.read_text()
                )

        response = await stub.Ingest(documents(), timeout=600)
    return sum(r.chunks for r in response.results)


def start_retriever(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    """`gearshift serve retriever` (embedded backend) in its own process, once SERVING."""
    ready = Path(tmp, "retriever.ready")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gearshift.cli.main", "serve", "retriever",
            "--grpc-port", "0", "--metrics-port", "-1", "--log-format", "text",
            "--data-dir", f"{tmp}/retriever", "--ready-file", str(ready),
        ],
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the retriever did not start")
        time.sleep(0.2)
    return process, f"127.0.0.1:{json.loads(ready.read_text())['grpc_port']}"


def write_config(tmp: str, routes: list[dict[str, Any]]) -> tuple[Path, Path]:
    routes_file = Path(tmp, "routes.yaml")
    routes_file.write_text(yaml.safe_dump_all(routes))
    keys_file = Path(tmp, "keys.yaml")
    keys_file.write_text(yaml.safe_dump({KEY: "bench"}))
    return routes_file, keys_file


async def ask(
    stub: router_pb2_grpc.RouterServiceStub, question: str, model: str, max_tokens: int
) -> tuple[float, float, int, int]:
    """(seconds to the first text, seconds to the end, completion tokens, citations)."""
    request = router_pb2.ChatRequest(
        model=model,
        messages=[common_pb2.ChatMessage(role="user", content=question)],
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens),
        cache_policy=router_pb2.CACHE_POLICY_BYPASS,
    )
    started = time.perf_counter()
    first = 0.0
    tokens = citations = 0
    stream = cast(
        AsyncIterator[router_pb2.ChatStreamChunk],
        stub.ChatStream(request, metadata=AUTH, timeout=300),
    )
    async for chunk in stream:
        if chunk.text_delta and not first:
            first = time.perf_counter() - started
        if chunk.usage.completion_tokens:
            tokens = chunk.usage.completion_tokens
        citations += len(chunk.citations)
    total = time.perf_counter() - started
    return first or total, total, tokens, citations


async def start_slm_with_source(tmp: str, retriever_address: str) -> tuple[Any, Path, Path]:
    """The real SLM server in this process, and a routes file with its route (no fallback)
    and the docs source: (the SLM's server host, routes file, API keys file)."""
    slm_settings = SlmSettings(host="127.0.0.1", grpc_port=0, metrics_port=-1)
    slm = SlmApp(slm_settings)
    slm_host = GrpcServiceHost(slm, slm_settings)
    slm_port = await slm_host.start()
    assert slm.engine is not None
    routes = [
        r
        for r in local_default_routes(
            f"127.0.0.1:{slm_port}", slm.engine.served_name, "127.0.0.1:1", "none"
        )
        if r["metadata"]["name"] == LOCAL_SLM_ROUTE
    ]
    routes[0]["spec"]["routing"].pop("fallback")
    routes.append(
        {
            "apiVersion": "gearshift.dev/v1alpha1",
            "kind": "DataSource",
            "metadata": {"name": SOURCE},
            "spec": {
                "description": "Gearshift's own documentation",
                "retriever": {"endpoint": retriever_address},
                "search": {"topK": 5},
            },
        }
    )
    routes_file, keys_file = write_config(tmp, routes)
    return slm_host, routes_file, keys_file


async def main(rounds: int, max_tokens: int) -> None:
    print(f"Machine: {describe_machine()}; load {os.getloadavg()[0]:.1f}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-source-") as tmp:
        retriever, retriever_address = start_retriever(tmp)
        chunks = await ingest_docs(retriever_address)
        print(f"retriever {retriever_address}: {chunks} chunks of docs/", flush=True)
        slm_host, routes_file, keys_file = await start_slm_with_source(tmp, retriever_address)
        router_settings = RouterSettings(
            host="127.0.0.1",
            grpc_port=0,
            http_port=0,
            metrics_port=-1,
            routes_file=str(routes_file),
            api_keys_file=str(keys_file),
            outcomes_dir=f"{tmp}/outcomes",
        )
        router_host = GrpcServiceHost(RouterApp(router_settings), router_settings)
        router_port = await router_host.start()
        print("router started; asking", flush=True)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{router_port}") as channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                for question, _ in QUESTIONS[:2]:  # warm up both paths
                    await ask(stub, question, LOCAL_SLM_ROUTE, max_tokens)
                    await ask(stub, question, SOURCE, max_tokens)
                runs: dict[str, list[tuple[float, float, int, int]]] = {"plain": [], "source": []}
                for round_ in range(rounds):
                    for index, (question, _) in enumerate(QUESTIONS):
                        order = ["plain", "source"]
                        if (index + round_) % 2:
                            order.reverse()
                        for kind in order:
                            model = LOCAL_SLM_ROUTE if kind == "plain" else SOURCE
                            runs[kind].append(await ask(stub, question, model, max_tokens))
        finally:
            await router_host.stop(0)
            retriever.terminate()
            retriever.wait(30)
            await slm_host.stop(0)
    assert all(r[3] > 0 for r in runs["source"]), "every source answer carries citations"
    print(
        f"{len(QUESTIONS)} questions x {rounds} rounds, max_tokens {max_tokens}, "
        f"source {SOURCE}: {chunks} chunks of docs/\n"
    )
    print(
        "| answer | n | first text p50 ms | p99 ms | whole answer p50 ms | p99 ms | tokens (mean) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    stats = {}
    for kind, rows in runs.items():
        first = [r[0] for r in rows]
        total = [r[1] for r in rows]
        stats[kind] = (pct(first, 0.5), pct(first, 0.99), pct(total, 0.5), pct(total, 0.99))
        print(
            f"| {kind} | {len(rows)} | {stats[kind][0]:.0f} | {stats[kind][1]:.0f} | "
            f"{stats[kind][2]:.0f} | {stats[kind][3]:.0f} | "
            f"{statistics.mean(r[2] for r in rows):.1f} |"
        )
    plain, source = stats["plain"], stats["source"]
    print(
        f"| source - plain | | {source[0] - plain[0]:+.0f} | {source[1] - plain[1]:+.0f} | "
        f"{source[2] - plain[2]:+.0f} | {source[3] - plain[3]:+.0f} | |"
    )
    print(
        f"| source / plain | | {source[0] / plain[0]:.2f}x | {source[1] / plain[1]:.2f}x | "
        f"{source[2] / plain[2]:.2f}x | {source[3] / plain[3]:.2f}x | |"
    )
    print(f"\nload after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.max_tokens))
