"""Cost of the routing decision for one query: embedding, difficulty, escalation.

    python benchmarks/bench_scorer_decision.py [--repeats 200] [--rounds 5]

Measures, one query at a time as the router sees an unbatched request, on a fixed mix
of prompts (chit-chat, benchmark-like, open tasks) and answers:
the all-MiniLM-L6-v2 embedding (the router's embedder, no LRU), the shipped two-stage
scorer, the previous one-stage scorer (baseline, same weights without the second stage,
measured in the same run), the escalation estimator on an answer, and the whole
before-generation decision (embedding + scorer). The goal for the decision is p50 <= 25 ms.

The embedding and the decision are measured in interleaved rounds, through the router's
micro-batcher (the model runs in a worker thread), three ways, so a busy machine affects
all alike: sentence-transformers' `encode` (the previous path), the embedder's short path
for a few short texts (tokenizer + model + mean pooling called directly, the default
now), and the short path with one torch thread instead of one per core.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import time
from collections.abc import Callable

from gearshift.dev.machine import describe_machine
from gearshift.embeddings import MicroBatcher, shared_embedder
from gearshift.router.cascade.estimator import load_default_estimator
from gearshift.router.scorer import DEFAULT_WEIGHTS, Scorer, ScorerWeights

PROMPTS = [
    "hi",
    "thanks, that helped!",
    "What is 7 times 8?",
    "Translate 'see you soon' into German.",
    "Prove that every tree with n vertices has n - 1 edges.",
    "Write a Rust function that parses ISO-8601 durations and explain its error handling.",
    "Which of the following is a primary source?\nA. a textbook\nB. a diary\n"
    "C. an encyclopedia\nD. a review\nAnswer:",
    "A shop sells pens at $2 each and notebooks at $5. Sam buys 3 pens and twice as many "
    "notebooks. How much does he pay?",
]
ANSWER = (
    "Here is a short answer.\n\n1. First, consider the base case.\n2. Then apply induction "
    "on the number of vertices, removing a leaf each time.\n\nThis completes the proof."
)


def percentiles(fn: Callable[[int], object], repeats: int) -> tuple[float, float]:
    """(p50, p99) in ms of fn(i) over `repeats` calls."""
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def interleaved(
    variants: dict[str, Callable[[int], object]], repeats: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """(p50, p99) in ms per variant, each run repeats/rounds times per round in turn."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    per_round = max(1, repeats // rounds)
    for r in range(rounds):
        for name, fn in variants.items():
            for i in range(r * per_round, (r + 1) * per_round):
                start = time.perf_counter()
                fn(i)
                times[name].append((time.perf_counter() - start) * 1000)
    out = {}
    for name, values in times.items():
        values.sort()
        out[name] = (
            statistics.median(values),
            values[min(len(values) - 1, int(0.99 * len(values)))],
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (embedding)")
    args = parser.parse_args()

    embedder = shared_embedder()
    weights = ScorerWeights.load(DEFAULT_WEIGHTS)
    shipped = Scorer(weights)
    previous = Scorer(dataclasses.replace(weights, open_stage=None))
    estimator = load_default_estimator()
    vectors = embedder.embed(PROMPTS)
    n = len(PROMPTS)
    loop = asyncio.new_event_loop()
    batcher = MicroBatcher(embedder)
    defaults = (embedder.short_path, embedder.query_threads)

    def embed_with(variant: tuple[bool, int | None]) -> Callable[[int], object]:
        def embed(i: int) -> object:
            embedder.short_path, embedder.query_threads = variant
            return loop.run_until_complete(batcher.embed_vector(PROMPTS[i % n]))

        return embed

    def decision_with(variant: tuple[bool, int | None]) -> Callable[[int], object]:
        def decision(i: int) -> object:
            embedder.short_path, embedder.query_threads = variant
            text = PROMPTS[i % n]
            return shipped.score(loop.run_until_complete(batcher.embed_vector(text)), text)

        return decision

    def score_shipped(i: int) -> object:
        return shipped.score(vectors[i % n], PROMPTS[i % n])

    def score_previous(i: int) -> object:
        return previous.score(vectors[i % n], PROMPTS[i % n])

    def escalate(i: int) -> object:
        return estimator.escalate(PROMPTS[i % n], ANSWER)

    threads = f"{embedder.batch_threads} threads"
    variants: dict[str, tuple[bool, int | None]] = {
        f"encode, {threads} (previous)": (False, None),
        f"short path, {threads} (now)": (True, None),
        "short path, 1 thread": (True, 1),
    }
    for variant in variants.values():  # warm up
        embed_with(variant)(0)
    for fn in (score_shipped, escalate):
        fn(0)
    load_before = os.getloadavg()
    timed = interleaved(
        {
            **{f"embedding (1 query), {k}": embed_with(v) for k, v in variants.items()},
            **{f"decision: embedding + scorer, {k}": decision_with(v) for k, v in variants.items()},
        },
        args.repeats,
        args.rounds,
    )
    embedder.short_path, embedder.query_threads = defaults
    rows = [
        ("scorer, previous one stage (baseline)", percentiles(score_previous, args.repeats * 5)),
        ("scorer, shipped two stages", percentiles(score_shipped, args.repeats * 5)),
        ("escalation estimator (prompt + answer)", percentiles(escalate, args.repeats * 5)),
        *timed.items(),
    ]
    loop.run_until_complete(batcher.close())
    loop.close()
    base = rows[0][1][0]
    print(describe_machine())
    load = ", ".join(f"{x:.1f}" for x in (*load_before, *os.getloadavg()))
    print(
        f"{n} prompts in rotation, {args.repeats} decisions per variant in {args.rounds} "
        f"interleaved rounds, load average (1, 5, 15 min) before and after: {load}\n"
    )
    print("| step | p50 ms | p99 ms | p50 vs one-stage scorer |")
    print("|---|---:|---:|---:|")
    for name, (p50, p99) in rows:
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {p50 / base:.1f}x |")
    old, new = (timed[f"decision: embedding + scorer, {k}"] for k in list(variants)[:2])
    print(
        f"\ndecision now / previous: p50 {new[0]:.1f} / {old[0]:.1f} ms ({new[0] / old[0]:.2f}x), "
        f"p99 {new[1]:.1f} / {old[1]:.1f} ms ({new[1] / old[1]:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
