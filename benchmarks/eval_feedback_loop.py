"""Does the router learn from its own outcomes? Feed half a set, retrain, test the other half.

    python benchmarks/eval_feedback_loop.py [--data FILE] [--seeds 3]

For each seed the open-ended prompts are split in two halves by prompt:

1. A router runs in this process (real embedder and shipped scorer, SQLite outcome store)
   over an echo backend (it answers at once: generation is not what is measured). Every
   prompt of the first half is sent through `RouterService.Chat` and its published
   outcome through `RouterService.Feedback`, keyed by the answer's response id, as a
   user who knows both models' verdicts would: on an slm answer the weak model's score
   and `other_tier_better` when only the strong model was good; on an llm answer the
   strong model's score and `other_tier_better` when the weak model was good too.
2. `gearshift scorer train --outcomes` (the same code) retrains on the shipped training
   data plus those outcomes, with its own held-out check.
3. Both scorers rank the second half, which neither saw: APGR with the file's verdicts
   (good = score >= 0.5).

The AlpacaEval files are CC BY-NC: this evaluates the loop; no shipped weights come from
it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_router import StandInApp

from gearshift.dev.data import shared_data_dir
from gearshift.dev.machine import describe_machine
from gearshift.learn.apgr import routing_report
from gearshift.learn.embed_cache import cached_embeddings
from gearshift.learn.outcomes import retrain
from gearshift.router.app import RouterApp
from gearshift.router.app import Settings as RouterSettings
from gearshift.router.scorer import DEFAULT_WEIGHTS, Scorer
from gearshift.routes.local import local_default_routes
from gearshift.runtime.server import GrpcServiceHost
from gearshift.v1 import common_pb2, router_pb2, router_pb2_grpc

KEY = "loop-key"
DEFAULT_DATA = shared_data_dir() / "openended" / "alpacaeval1_gpt4_vs_llama2_7b_chat.jsonl"
GOOD = 0.5


@dataclass(frozen=True)
class Row:
    prompt: str
    weak_good: bool
    strong_good: bool


def load_rows(path: Path) -> list[Row]:
    rows = []
    for line in path.open(encoding="utf-8"):
        if line.strip():
            obj = json.loads(line)
            rows.append(Row(obj["prompt"], obj["weak_score"] >= GOOD, obj["strong_score"] >= GOOD))
    return rows


async def feed(rows: list[Row], tmp: Path, concurrency: int = 8) -> tuple[dict[str, int], float]:
    """Chat + Feedback for every row through a real router; (answers per tier, feedback p50 ms)."""
    echo_settings = RouterSettings(grpc_port=0, metrics_port=-1, http_port=-1)
    echo_host = GrpcServiceHost(StandInApp(), echo_settings)
    echo = f"127.0.0.1:{await echo_host.start()}"
    routes_file, keys_file = tmp / "routes.yaml", tmp / "keys.yaml"
    routes_file.write_text(yaml.safe_dump_all(local_default_routes(echo, "echo", echo, "echo")))
    keys_file.write_text(yaml.safe_dump({KEY: "loop"}))
    settings = RouterSettings(
        grpc_port=0,
        metrics_port=-1,
        http_port=-1,
        routes_file=str(routes_file),
        api_keys_file=str(keys_file),
        outcomes_dir=str(tmp / "outcomes"),
    )
    host = GrpcServiceHost(RouterApp(settings), settings)
    port = await host.start()
    meta = [("authorization", f"Bearer {KEY}")]
    tiers = {"slm": 0, "llm": 0}
    feedback_ms: list[float] = []
    todo = iter(rows)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)

        async def worker() -> None:
            for row in todo:
                reply = await stub.Chat(
                    router_pb2.ChatRequest(
                        messages=[common_pb2.ChatMessage(role="user", content=row.prompt)],
                        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=16),
                    ),
                    metadata=meta,
                    timeout=60,
                )
                small = reply.decision.tier == common_pb2.TIER_SLM
                tiers["slm" if small else "llm"] += 1
                outcome = router_pb2.FeedbackRequest(response_id=reply.decision.response_id)
                if small:
                    outcome.score = 1.0 if row.weak_good else 0.0
                    outcome.other_tier_better = row.strong_good and not row.weak_good
                else:
                    outcome.score = 1.0 if row.strong_good else 0.0
                    outcome.other_tier_better = row.weak_good
                start = time.perf_counter()
                await stub.Feedback(outcome, metadata=meta, timeout=10)
                feedback_ms.append((time.perf_counter() - start) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    await host.stop(1.0)
    await echo_host.stop(0)
    return tiers, statistics.median(feedback_ms)


def apgr(scorer: Scorer, rows: list[Row], embeddings: Any) -> float:
    scores = scorer.score_many(embeddings, [r.prompt for r in rows])
    weak = np.asarray([r.weak_good for r in rows])
    strong = np.asarray([r.strong_good for r in rows])
    return routing_report(scores, weak, strong).apgr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--base-data", type=Path, default=shared_data_dir() / "routing_dev.jsonl")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--outcomes-only", action="store_true", help="skip retraining with the base data"
    )
    parser.add_argument("--outcome-weight", type=int, default=5)
    args = parser.parse_args()
    rows = load_rows(args.data)
    embeddings = cached_embeddings([r.prompt for r in rows])
    shipped = Scorer.load(DEFAULT_WEIGHTS)
    print(f"{args.data.name}: {len(rows)} prompts; base data {args.base_data.name}")
    print(f"machine: {describe_machine()}")
    print()
    print(
        "| seed | fed (slm/llm answers) | feedback p50 | retrained on, time | APGR shipped "
        "| APGR retrained | gain |"
    )
    print("|---|---|---|---|---|---|---|")
    gains: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        order = np.random.default_rng(seed).permutation(len(rows))
        half = len(rows) // 2
        fed, test = order[:half], order[half:]
        with tempfile.TemporaryDirectory(prefix="gearshift-loop-") as tmp_name:
            tmp = Path(tmp_name)
            tiers, feedback_p50 = asyncio.run(feed([rows[i] for i in fed], tmp))
            test_rows = [rows[i] for i in test]
            before = apgr(shipped, test_rows, embeddings[test])
            variants: list[tuple[str, Path | None]] = [("outcomes only", None)]
            if not args.outcomes_only:
                variants.insert(0, ("base data + outcomes", args.base_data))
            for variant, base in variants:
                out = tmp / f"weights-{variant.replace(' ', '-')}.npz"  # new: vs shipped
                flags = ["--outcomes", str(tmp / "outcomes"), "--out", str(out)]
                flags += ["--outcome-weight", str(args.outcome_weight)]
                if base is not None:
                    flags += ["--data", str(base)]
                start = time.perf_counter()
                code = retrain.main(flags)
                took = time.perf_counter() - start
                after = before
                if code == 0:
                    after = apgr(Scorer.load(out), test_rows, embeddings[test])
                gains.setdefault(variant, []).append(after - before)
                verdict = f"{took:.0f} s" if code == 0 else f"refused ({took:.0f} s)"
                print(
                    f"| {seed} | {tiers['slm']}/{tiers['llm']} | {feedback_p50:.1f} ms | {variant}"
                    f", {verdict} | {before:.3f} | {after:.3f} | {after - before:+.3f} |",
                    flush=True,
                )
    for variant, values in gains.items():
        print(f"mean gain, {variant}, over {args.seeds} splits: {statistics.mean(values):+.3f}")


if __name__ == "__main__":
    main()
