"""`gearshift scorer train --outcomes`: retrain the scorer from the deployment's outcomes.

    gearshift scorer train --outcomes ~/.gearshift/router --out /srv/scorer/weights.npz
    gearshift scorer train --outcomes postgresql://... --data routing_dev.jsonl --out ...

1. Reads every decision with an outcome from the store and labels it (`labels.py`).
2. Holds out a stable slice of the labelled answers (`--holdout`, by response id).
3. Fits the scorer (the scorer package's `fit_gain_model`) on the base data (`--data`,
   the shipped training file, when given) plus the other outcomes, each repeated
   `--outcome-weight` times so a few hundred answers are not drowned by ten thousand
   benchmark rows.
4. Re-calibrates the large-tier share on the deployment's own traffic: the quantiles of
   the new scores of every labelled answer replace the reference traffic's.
5. Compares the new scorer with the running one (`--running`, default: the file at
   `--out`, else the shipped weights) by APGR on the held-out slice and refuses (exit 2,
   nothing written) when the new one is worse.
6. Writes the weights atomically (a temporary file, then a rename), so a router watching
   the file (`scorer_weights`) never reads half a file.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gearshift.learn.outcomes.labels import OutcomeLabels, held_out_mask, outcome_labels
from gearshift.router.outcomes.store import open_store

OUTCOME_DOMAIN = "deployment-outcomes"
EXIT_REFUSED = 2


@dataclass(frozen=True)
class Comparison:
    """APGR of the running and the new scorer on the held-out outcomes."""

    running: float
    new: float
    n: int


def read_labels(target: str, since: float = 0.0) -> OutcomeLabels:
    async def read() -> OutcomeLabels:
        store = open_store(target, timeout_s=30.0)
        await store.open()
        try:
            return outcome_labels(await store.labelled(since))
        finally:
            await store.close()

    return asyncio.run(read())


def apgr_on(scorer: Any, labels: OutcomeLabels) -> float | None:
    """APGR of a scorer on labelled outcomes; None when the slice cannot rank (no gap)."""
    from gearshift.learn.apgr import routing_report

    if len(labels) == 0 or labels.strong_correct.mean() <= labels.weak_correct.mean():
        return None
    scores = scorer.score_features(labels.embeddings, labels.features)
    return routing_report(scores, labels.weak_correct, labels.strong_correct).apgr


def fit_with_outcomes(
    base_data: Path | None,
    outcomes: OutcomeLabels,
    calibration_traffic: OutcomeLabels,
    outcome_weight: int,
    cache_dir: Path | None,
    meta: dict[str, object],
) -> Any:
    """ScorerWeights fitted on the base data plus the outcomes, calibrated on traffic."""
    from gearshift.learn.embed_cache import cached_embeddings
    from gearshift.learn.routing_data import RoutingData, load_jsonl
    from gearshift.learn.scorer.fit import fit_gain_model
    from gearshift.router.scorer.calibration import Calibration
    from gearshift.router.scorer.model import Scorer
    from gearshift.router.scorer.prompt_features import prompt_features_many

    repeat = max(1, outcome_weight)
    # The texts are not read (digest-only stores have none): the features stand for them.
    prompts = outcomes.prompts * repeat
    domains = [OUTCOME_DOMAIN] * len(prompts)
    weak = np.tile(outcomes.weak_correct, repeat)
    strong = np.tile(outcomes.strong_correct, repeat)
    embeddings: npt.NDArray[np.float32] = np.tile(outcomes.embeddings, (repeat, 1))
    features: npt.NDArray[np.float32] = np.tile(outcomes.features, (repeat, 1))
    if base_data is not None:
        base = load_jsonl(base_data)
        base_embeddings = cached_embeddings(base.prompts, cache_dir)
        prompts = base.prompts + prompts
        domains = base.domains + domains
        weak = np.concatenate([base.weak_correct, weak])
        strong = np.concatenate([base.strong_correct, strong])
        embeddings = np.concatenate([base_embeddings, embeddings]).astype(np.float32)
        features = np.concatenate([prompt_features_many(base.prompts), features])
    data = RoutingData(prompts, domains, weak, strong)
    weights = fit_gain_model(data, embeddings, meta=meta, features=features)
    if len(calibration_traffic) >= 50:
        scores = Scorer(weights).score_features(
            calibration_traffic.embeddings, calibration_traffic.features
        )
        weights = dataclasses.replace(weights, quantiles=Calibration.from_scores(scores).quantiles)
    return weights


def save_atomically(weights: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.npz")
    weights.save(tmp)
    os.replace(tmp, out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--outcomes",
        required=True,
        help="the outcome store: the router's outcomes_dir (SQLite) or a PostgreSQL URL",
    )
    parser.add_argument("--out", required=True, type=Path, help="weights .npz to write")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="base training JSONL (the shipped scorer's data, e.g. routing_dev.jsonl); "
        "without it the scorer learns from the outcomes alone",
    )
    parser.add_argument(
        "--running",
        type=Path,
        default=None,
        help="weights the router runs now (default: --out if it exists, else the shipped)",
    )
    parser.add_argument("--holdout", type=float, default=0.3, help="share of outcomes held out")
    parser.add_argument(
        "--min-holdout", type=int, default=20, help="fewest held-out outcomes to decide on"
    )
    parser.add_argument("--outcome-weight", type=int, default=5, help="repeats per outcome")
    parser.add_argument("--since-days", type=float, default=0.0, help="only recent outcomes")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache")
    parser.add_argument(
        "--force", action="store_true", help="write even when the held-out check cannot decide"
    )


def run(args: argparse.Namespace) -> int:
    from gearshift.router.scorer import DEFAULT_WEIGHTS, Scorer

    since = 0.0
    if args.since_days > 0:
        since = datetime.now(UTC).timestamp() - args.since_days * 86400.0
    labels = read_labels(args.outcomes, since)
    print(f"{len(labels)} labelled answers in {args.outcomes}")
    if labels.without_features:
        print(
            f"{labels.without_features} labelled answers left out: stored as a digest only, "
            "without the prompt features retraining needs (recorded by an older router, or "
            "with another feature layout)",
            file=sys.stderr,
        )
    if len(labels) == 0:
        print("no usable outcomes: nothing to learn from", file=sys.stderr)
        return EXIT_REFUSED
    held = held_out_mask(labels.response_ids, args.holdout)
    train, test = labels.subset(~held), labels.subset(held)
    running_path = args.running or (args.out if args.out.exists() else DEFAULT_WEIGHTS)
    meta: dict[str, object] = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": args.data.name if args.data else "",
        "outcomes": len(train),
        "outcome_weight": args.outcome_weight,
        "embedding": "all-MiniLM-L6-v2 (normalised)",
    }
    weights = fit_with_outcomes(args.data, train, labels, args.outcome_weight, args.cache_dir, meta)
    running_apgr = apgr_on(Scorer.load(running_path), test)
    new_apgr = apgr_on(Scorer(weights), test)
    print(
        f"held-out outcomes: {len(test)}; APGR running ({running_path.name}) "
        f"{_fmt(running_apgr)}, new {_fmt(new_apgr)}"
    )
    if running_apgr is None or new_apgr is None or len(test) < args.min_holdout:
        if not args.force:
            print(
                f"refused: the held-out slice ({len(test)} answers, at least "
                f"{args.min_holdout} with the strong tier ahead needed) cannot show the new "
                "scorer is no worse; collect more outcomes or pass --force",
                file=sys.stderr,
            )
            return EXIT_REFUSED
    elif new_apgr < running_apgr:
        print(
            f"refused: the new scorer is worse on held-out outcomes (APGR {new_apgr:.3f} < "
            f"{running_apgr:.3f}); {args.out} left unchanged",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    weights = dataclasses.replace(
        weights, meta=dict(weights.meta, holdout_apgr=new_apgr, running_apgr=running_apgr)
    )
    save_atomically(weights, args.out)
    print(f"wrote {args.out}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def add_parser(sub: Any) -> None:
    """`gearshift scorer train`."""
    scorer = sub.add_parser("scorer", help="retrain the difficulty scorer")
    scorer_sub = scorer.add_subparsers(dest="scorer_command", required=True)
    train = scorer_sub.add_parser(
        "train", help="fit the scorer on recorded outcomes (and base data); refuse a worse one"
    )
    add_arguments(train)
    train.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
