"""Held-out APGR / CPT of the scorer, with the random and embedding+LR baselines.

Two modes, both printing one markdown table measured in the same run:

* cross-validation (default): `--data FILE` is split into k folds; the scorer and the
  baseline are trained on k-1 folds and score the held-out fold; metrics are computed on
  the pooled out-of-fold scores (every prompt is scored by a model that never saw it).
* held-out file: `--heldout FILE` scores that file with the committed weights
  (`--weights`, default the shipped file); the baseline is trained on `--data`.

    python -m gearshift.learn.scorer.evaluate --data ../shared/data/routing_dev.jsonl
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.learn.apgr import RoutingReport, routing_report
from gearshift.learn.embed_cache import DEFAULT_CACHE_DIR, cached_embeddings
from gearshift.learn.routing_data import RoutingData, load_jsonl, stratified_folds
from gearshift.learn.scorer.fit import fit_gain_model, gains_of
from gearshift.router.scorer import DEFAULT_WEIGHTS
from gearshift.router.scorer.model import F32, Scorer


def logistic_baseline(train_x: F32, train: RoutingData, test_x: F32) -> npt.NDArray[np.float64]:
    """all-MiniLM-L6-v2 embedding + logistic regression on "strong needed" (the reference)."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    label = train.strong_correct & ~train.weak_correct
    model = LogisticRegression(max_iter=2000).fit(train_x, label)
    out: npt.NDArray[np.float64] = model.predict_proba(test_x)[:, 1]
    return out


def _row(name: str, r: RoutingReport) -> str:
    return f"| {name} | {r.apgr:.3f} | {r.cpt50:.3f} | {r.cpt80:.3f} |"


def print_table(title: str, data: RoutingData, scores: dict[str, npt.NDArray[np.float64]]) -> None:
    print(f"\n### {title}\n")
    print(
        f"n={len(data)}, weak accuracy {data.weak_correct.mean():.3f}, "
        f"strong accuracy {data.strong_correct.mean():.3f}\n"
    )
    print("| router | APGR | CPT(50%) | CPT(80%) |")
    print("|---|---|---|---|")
    for name, values in scores.items():
        print(_row(name, routing_report(values, data.weak_correct, data.strong_correct)))
    benchmarks = sorted({d if d == "gsm8k" else "mmlu" for d in data.domains})
    if len(benchmarks) > 1:
        labels = np.asarray(["gsm8k" if d == "gsm8k" else "mmlu" for d in data.domains])
        for bench in benchmarks:
            mask = labels == bench
            print(f"\n{bench} only (n={int(mask.sum())}):\n")
            print("| router | APGR | CPT(50%) | CPT(80%) |")
            print("|---|---|---|---|")
            for name, values in scores.items():
                r = routing_report(values[mask], data.weak_correct[mask], data.strong_correct[mask])
                print(_row(name, r))


def cross_validate(
    data: RoutingData, emb: F32, k: int, seed: int
) -> dict[str, npt.NDArray[np.float64]]:
    ours = np.zeros(len(data))
    base = np.zeros(len(data))
    for train_idx, test_idx in stratified_folds(data.domains, k, seed=seed):
        train = data.subset(train_idx)
        test_prompts = [data.prompts[i] for i in test_idx]
        weights = fit_gain_model(train, emb[train_idx], seed=seed)
        ours[test_idx] = gains_of(weights, emb[test_idx], test_prompts)
        base[test_idx] = logistic_baseline(emb[train_idx], train, emb[test_idx])
    rng = np.random.default_rng(seed)
    return {
        "gearshift scorer": ours,
        "embedding + logistic regression": base,
        "random": rng.random(len(data)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="labelled routing JSONL")
    parser.add_argument("--heldout", type=Path, help="score this file with --weights instead")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)

    data = load_jsonl(args.data)
    emb = cached_embeddings(data.prompts, args.cache_dir)
    print(f"machine: {platform.platform()}, python {platform.python_version()}")
    if args.heldout is None:
        scores = cross_validate(data, emb, args.folds, args.seed)
        print_table(f"{args.folds}-fold cross-validation on {args.data.name}", data, scores)
        return 0
    held = load_jsonl(args.heldout)
    held_emb = cached_embeddings(held.prompts, args.cache_dir)
    scorer = Scorer.load(args.weights)
    rng = np.random.default_rng(args.seed)
    scores = {
        "gearshift scorer": scorer.score_many(held_emb, held.prompts),
        "embedding + logistic regression": logistic_baseline(emb, data, held_emb),
        "random": rng.random(len(held)),
    }
    print_table(f"{args.heldout.name} scored by {args.weights.name}", held, scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
