"""Cost of the routing decision for one query: embedding, difficulty, escalation.

    python benchmarks/bench_scorer_decision.py [--repeats 200]

Measures, one query at a time as the router sees an unbatched request, on a fixed mix
of prompts (chit-chat, benchmark-like, open tasks) and answers:
the all-MiniLM-L6-v2 embedding (the router's embedder, no LRU), the shipped two-stage
scorer, the previous one-stage scorer (baseline, same weights without the second stage,
measured in the same run), the escalation estimator on an answer, and the whole
before-generation decision (embedding + scorer). The goal for the decision is p50 <= 25 ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable

from gearshift.dev.machine import describe_machine
from gearshift.embeddings import shared_embedder
from gearshift.router.escalation import load_default_estimator
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    embedder = shared_embedder()
    weights = ScorerWeights.load(DEFAULT_WEIGHTS)
    shipped = Scorer(weights)
    previous = Scorer(dataclasses.replace(weights, open_stage=None))
    estimator = load_default_estimator()
    vectors = embedder.embed(PROMPTS)
    n = len(PROMPTS)

    def embed(i: int) -> object:
        return embedder.embed([PROMPTS[i % n]])

    def score_shipped(i: int) -> object:
        return shipped.score(vectors[i % n], PROMPTS[i % n])

    def score_previous(i: int) -> object:
        return previous.score(vectors[i % n], PROMPTS[i % n])

    def escalate(i: int) -> object:
        return estimator.escalate(PROMPTS[i % n], ANSWER)

    def decision(i: int) -> object:
        text = PROMPTS[i % n]
        return shipped.score(embedder.embed([text])[0], text)

    for fn in (embed, score_shipped, escalate):  # warm up
        fn(0)
    rows = [
        ("embedding (1 query, all-MiniLM-L6-v2)", percentiles(embed, args.repeats)),
        ("scorer, previous one stage (baseline)", percentiles(score_previous, args.repeats * 5)),
        ("scorer, shipped two stages", percentiles(score_shipped, args.repeats * 5)),
        ("escalation estimator (prompt + answer)", percentiles(escalate, args.repeats * 5)),
        ("decision: embedding + shipped scorer", percentiles(decision, args.repeats)),
    ]
    base = rows[1][1][0]
    print(describe_machine())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{n} prompts in rotation, {args.repeats} decisions, load average {load}\n")
    print("| step | p50 ms | p99 ms | p50 vs one-stage scorer |")
    print("|---|---:|---:|---:|")
    for name, (p50, p99) in rows:
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {p50 / base:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
