"""How often an answer from a data source is right, and how long it takes, per answer mode.

    flock /tmp/gearshift-vllm.lock python benchmarks/eval_source_answers.py [--max-tokens 64]

The real parts over loopback gRPC: a `gearshift serve retriever` process holding the
project's docs/ as source `gearshift-docs`, the real SLM server (vLLM CPU engine, the
embedded small model) and one router per row, all asked the 24 questions of
`docs_questions.py` (written for this project; each has its expected document and key terms
taken verbatim from the section that answers it) with `model: gearshift-docs`, temperature
0, the cache bypassed. Rows differ only in the router's `source_answer` mode and
`source_context_chars`:

- generate: the model writes the answer from the passages (the cluster default; the first
  row, with the 3000-character context, is the embedded default before this benchmark);
- quote: no model call: the best passage's lines that match the question, cited [1];
- verify: the model answers, and the answer is served only when the passages support it
  (`source_support_min`), else the quote.

Columns: correct = the answer contains one of the question's key terms; supported = the
router's own support measure of the answer against its passages is at least 0.8; right
doc = the first citation is the expected document; whole answer p50/p90 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import grpc
from bench_source_answer import SOURCE, start_retriever, start_slm_with_source
from bench_source_answer import ingest_docs as ingest
from docs_questions import DOCS_QUESTIONS

from gearshift.dev.machine import describe_machine
from gearshift.router.app import RouterApp
from gearshift.router.app import Settings as RouterSettings
from gearshift.router.core.grounding import used_passages
from gearshift.router.core.quoting import support
from gearshift.runtime.server import GrpcServiceHost
from gearshift.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc, router_pb2, router_pb2_grpc

AUTH = (("authorization", "Bearer bench-key"),)
# (label, source_answer, source_context_chars)
ROWS = [
    ("generate, 3000 chars (before)", "generate", 3000),
    ("generate, 1000 chars", "generate", 1000),
    ("quote", "quote", 1000),
    ("verify, 1000 chars", "verify", 1000),
]


@dataclass
class Answer:
    text: str
    seconds: float
    first_doc: str


async def ask(stub: router_pb2_grpc.RouterServiceStub, question: str, max_tokens: int) -> Answer:
    request = router_pb2.ChatRequest(
        model=SOURCE,
        messages=[common_pb2.ChatMessage(role="user", content=question)],
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens),
        cache_policy=router_pb2.CACHE_POLICY_BYPASS,
    )
    started = time.perf_counter()
    parts: list[str] = []
    first_doc = ""
    stream = cast(
        AsyncIterator[router_pb2.ChatStreamChunk],
        stub.ChatStream(request, metadata=AUTH, timeout=300),
    )
    async for chunk in stream:
        parts.append(chunk.text_delta)
        if chunk.citations and not first_doc:
            first_doc = chunk.citations[0].document_id
    return Answer("".join(parts), time.perf_counter() - started, first_doc)


async def search(address: str, question: str) -> list[retriever_pb2.Passage]:
    """The passages the router's search gets (same source, top_k 5, hybrid)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
        request = retriever_pb2.SearchRequest(source=SOURCE, query=question, top_k=5)
        return list((await stub.Search(request, timeout=30)).passages)


async def main(max_tokens: int) -> None:
    print(f"Machine: {describe_machine()}; load {os.getloadavg()[0]:.1f}\n", flush=True)
    results: dict[str, list[tuple[Answer, bool, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="gearshift-eval-source-") as tmp:
        retriever, retriever_address = start_retriever(tmp)
        chunks = await ingest(retriever_address)
        slm_host, routes_file, keys_file = await start_slm_with_source(tmp, retriever_address)
        try:
            for label, mode, context_chars in ROWS:
                settings = RouterSettings(
                    host="127.0.0.1",
                    grpc_port=0,
                    http_port=-1,
                    metrics_port=-1,
                    routes_file=str(routes_file),
                    api_keys_file=str(keys_file),
                    outcomes_dir=f"{tmp}/outcomes-{mode}-{context_chars}",
                    source_answer=mode,
                    source_context_chars=context_chars,
                )
                app = RouterApp(settings)
                host = GrpcServiceHost(app, settings)
                port = await host.start()
                rows: list[tuple[Answer, bool, float]] = []
                try:
                    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                        stub = router_pb2_grpc.RouterServiceStub(channel)
                        await ask(stub, DOCS_QUESTIONS[0].question, max_tokens)  # warm up
                        for q in DOCS_QUESTIONS:
                            answer = await ask(stub, q.question, max_tokens)
                            passages = used_passages(
                                await search(retriever_address, q.question), context_chars
                            )
                            correct = any(t.lower() in answer.text.lower() for t in q.key_terms)
                            rows.append((answer, correct, support(answer.text, passages)))
                finally:
                    await host.stop(0)
                results[label] = rows
                print(f"{label}: done", flush=True)
        finally:
            retriever.terminate()
            retriever.wait(30)
            await slm_host.stop(0)
    print(
        f"\n{len(DOCS_QUESTIONS)} questions about docs/ ({chunks} chunks), max_tokens "
        f"{max_tokens}, streamed, cache bypassed\n"
    )
    print("| answer mode | correct | supported | right doc first | p50 ms | p90 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    n = len(DOCS_QUESTIONS)
    for label, rows in results.items():
        seconds = sorted(a.seconds for a, _, _ in rows)
        right_doc = sum(
            a.first_doc == q.document for (a, _, _), q in zip(rows, DOCS_QUESTIONS, strict=True)
        )
        print(
            f"| {label} | {sum(c for _, c, _ in rows)}/{n} | "
            f"{sum(s >= 0.8 for _, _, s in rows)}/{n} | {right_doc}/{n} | "
            f"{statistics.median(seconds) * 1000:.0f} | {seconds[int(0.9 * n)] * 1000:.0f} |"
        )
    print(f"\nload after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-tokens", type=int, default=64)
    asyncio.run(main(parser.parse_args().max_tokens))
