"""Train the difficulty scorer on labelled routing traffic and write its weights file.

    python -m gearshift.learn.scorer.train --data ../shared/data/routing_dev.jsonl \\
        --out services/gearshift/router/scorer/weights.npz \\
        --calibration-prompts ../shared/data/openended/alpacaeval2_fn_gpt4turbo_vs_mixtral8x7b.jsonl

The data is JSONL with `prompt`, `weak_correct`, `strong_correct` and optionally
`domain` (see `data.py`). Training first runs k-fold cross-validation: its out-of-fold
estimates give the honest held-out APGR / CPT printed at the end and the reference
score quantiles used for share calibration; then the first stage is refitted on all
rows. The second stage (prompts unlike that traffic) is fitted on the shipped anchor
prompts (`anchors.py`). `--base WEIGHTS` keeps an existing file's first stage and
refits only the second. `--calibration-prompts` (JSONL with `prompt`) mixes those
prompts' scores into the share calibration (`--calibration-weight` of it), so the
large-tier share holds for chat-like traffic too; their outcomes are not read.
Embeddings are cached under ~/.cache/gearshift/scorer (see `--cache-dir`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.learn.apgr import routing_report
from gearshift.learn.embed_cache import DEFAULT_CACHE_DIR, cached_embeddings
from gearshift.learn.routing_data import RoutingData, load_jsonl
from gearshift.learn.scorer.anchors import anchor_data
from gearshift.learn.scorer.fit import (
    ALPHA,
    attach_open_stage,
    cross_validated_gains,
    fit_gain_model,
)
from gearshift.router.scorer.calibration import QUANTILE_LEVELS, Calibration
from gearshift.router.scorer.model import F32, Scorer, ScorerWeights


def fit_scorer(
    data: RoutingData,
    embeddings: F32,
    folds: int = 5,
    alpha: float = ALPHA,
    seed: int = 0,
    meta: dict[str, object] | None = None,
    cache_dir: Path | None = None,
) -> ScorerWeights:
    """Both stages on (prompts, outcomes): the entry point for retraining on new examples.

    `data` may mix the shipped routing data with a deployment's recorded outcomes (same
    fields); the second stage always comes from the anchor prompts.
    """
    oof = cross_validated_gains(data, embeddings, k=folds, seed=seed, alpha=alpha)
    report = routing_report(oof, data.weak_correct, data.strong_correct)
    info: dict[str, object] = dict(
        meta or {},
        cv_folds=folds,
        cv_apgr=round(report.apgr, 4),
        cv_cpt50=round(report.cpt50, 4),
        cv_cpt80=round(report.cpt80, 4),
    )
    weights = fit_gain_model(
        data, embeddings, alpha=alpha, seed=seed, calibration_gains=oof, meta=info
    )
    anchors = anchor_data()
    return attach_open_stage(weights, anchors, cached_embeddings(anchors.prompts, cache_dir))


def mixed_calibration(
    base: Calibration, scores: npt.NDArray[np.floating], weight: float
) -> Calibration:
    """`base`'s distribution and `scores` mixed, `scores` counting for `weight` of it.

    For traffic that is part benchmark-like, part open chat: the weights file's own
    quantiles stand for the first, reference chat prompts for the second.
    """
    if not 0.0 <= weight <= 1.0 or scores.size == 0:
        raise ValueError("need reference scores and a weight in [0, 1]")
    values = np.concatenate([base.quantiles, np.asarray(scores, dtype=np.float64)])
    mass = np.concatenate(
        [
            np.full(base.quantiles.size, (1.0 - weight) / base.quantiles.size),
            np.full(scores.size, weight / scores.size),
        ]
    )
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(mass[order]) - mass[order] / 2
    grid = np.linspace(0.0, 1.0, QUANTILE_LEVELS)
    quantiles: npt.NDArray[np.float64] = np.interp(grid, cumulative, values[order])
    return Calibration(quantiles=quantiles)


def _prompts(path: Path) -> list[str]:
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    prompts.append(str(json.loads(line)["prompt"]))
                except (KeyError, TypeError, json.JSONDecodeError) as exc:
                    raise ValueError(f"{path}:{number}: no prompt ({exc})") from exc
    return prompts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="routing JSONL file (first stage)")
    parser.add_argument("--base", type=Path, help="keep this weights file's first stage")
    parser.add_argument("--out", required=True, type=Path, help="weights .npz to write")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="ridge penalty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument(
        "--calibration-prompts",
        type=Path,
        action="append",
        default=[],
        help="JSONL with 'prompt': chat-like traffic for the share calibration (repeatable)",
    )
    parser.add_argument("--calibration-weight", type=float, default=0.5)
    args = parser.parse_args(argv)
    if (args.data is None) == (args.base is None):
        parser.error("give exactly one of --data or --base")

    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    if args.data is not None:
        data = load_jsonl(args.data)
        print(f"{len(data)} prompts, {len(set(data.domains))} domains; embedding (cached)...")
        embeddings = cached_embeddings(data.prompts, args.cache_dir)
        meta: dict[str, object] = {
            "trained_at": stamp,
            "data": args.data.name,
            "embedding": "all-MiniLM-L6-v2 (normalised)",
        }
        weights = fit_scorer(
            data, embeddings, args.folds, args.alpha, args.seed, meta, args.cache_dir
        )
        print(
            f"{args.folds}-fold held-out (first stage): APGR {weights.meta['cv_apgr']}  "
            f"CPT(50%) {weights.meta['cv_cpt50']}  CPT(80%) {weights.meta['cv_cpt80']}"
        )
    else:
        base = ScorerWeights.load(args.base)
        anchors = anchor_data()
        anchor_emb = cached_embeddings(anchors.prompts, args.cache_dir)
        weights = attach_open_stage(base, anchors, anchor_emb)
    meta_out = dict(
        weights.meta,
        second_stage=f"anchors.py ({len(anchor_data())} prompts)",
        second_stage_at=stamp,
    )
    if args.calibration_prompts:
        prompts = [p for path in args.calibration_prompts for p in _prompts(path)]
        scores = Scorer(weights).score_many(cached_embeddings(prompts, args.cache_dir), prompts)
        mixed = mixed_calibration(
            Scorer(weights).calibration, np.asarray(scores), args.calibration_weight
        )
        weights = dataclasses.replace(weights, quantiles=mixed.quantiles)
        meta_out["calibration"] = (
            f"{1 - args.calibration_weight:.0%} {weights.meta.get('data', 'first-stage data')} "
            f"out-of-fold scores, {args.calibration_weight:.0%} scores of {len(prompts)} prompts "
            f"of {', '.join(p.name for p in args.calibration_prompts)}"
        )
    weights = dataclasses.replace(weights, meta=meta_out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    weights.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
