"""Cost of source selection over an existing query embedding, for 10 to 1000 options.

    python benchmarks/bench_selection.py [--options 10,100,1000] [--calls 2000]

Each option has a description and five examples (six texts), embedded once by the real
model when the table changes (the "index build" column). A call scores one question's
embedding against every option (one matrix product, per-option max, excludes) and applies
the threshold: what the router does per request. The baseline is the design most peers
ship (LlamaIndex's EmbeddingSingleSelector): embed every option's description again for
each question; measured in the same run on the same texts, over a few calls only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from gearshift.dev.machine import describe_machine
from gearshift.embeddings import shared_embedder
from gearshift.router.selection.selector import OptionIndex, options_of, select
from gearshift.router.table.routing_table import Snapshot, Source

TOPICS = (
    "billing exports",
    "GPU node maintenance",
    "cache settings",
    "on-call rotation",
    "network policies",
    "database backups",
    "release process",
    "security incidents",
    "cost reports",
    "model evaluation",
)


def sources(n: int) -> list[Source]:
    """n sources with a description and five examples each (texts vary per source)."""
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        out.append(
            Source(
                name=f"source-{i}",
                description=f"Team {i}'s documents about {topic}: procedures and settings",
                endpoint="127.0.0.1:1",
                examples=tuple(f"Question {j} for team {i} about {topic}?" for j in range(5)),
            )
        )
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", default="10,100,1000")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--baseline-calls", type=int, default=5)
    args = parser.parse_args()
    embedder = shared_embedder()
    query = embedder.embed(["How do I change the cache's similarity threshold?"])[0]
    print(f"Machine: {describe_machine()}\n")
    print("| options | texts | index build ms | select p50 ms | select p99 ms "
          "| re-embed baseline p50 ms | baseline / select |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.options.split(",")):
        options = options_of(Snapshot.of([], 1, sources(n)))
        start = time.perf_counter()
        index = OptionIndex.build(options, embedder.embed)
        build_ms = (time.perf_counter() - start) * 1000
        for _ in range(50):
            select(index.score(query), 0.35, 0.0)
        times = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            select(index.score(query), 0.35, 0.0)
            times.append((time.perf_counter() - t0) * 1000)
        descriptions = [o.positives[0] for o in options]
        baseline = []
        for _ in range(args.baseline_calls):
            t0 = time.perf_counter()
            vectors = embedder.embed(descriptions)
            int(np.argmax(vectors @ query))
            baseline.append((time.perf_counter() - t0) * 1000)
        p50 = statistics.median(times)
        base = statistics.median(baseline)
        print(
            f"| {n} | {len(index.texts)} | {build_ms:.0f} | {p50:.3f} | "
            f"{percentile(times, 0.99):.3f} | {base:.1f} | {base / p50:.0f}x |",
            flush=True,
        )
    print("\ngoal: select p50 <= 1 ms at 100 options")


if __name__ == "__main__":
    main()
