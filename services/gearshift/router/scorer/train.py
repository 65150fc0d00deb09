"""Train the difficulty scorer on labelled routing traffic and write its weights file.

    python -m gearshift.router.scorer.train --data ../shared/data/routing_dev.jsonl \\
        --out services/gearshift/router/scorer/weights.npz

The data is JSONL with `prompt`, `weak_correct`, `strong_correct` and optionally
`domain` (see `data.py`). Training first runs k-fold cross-validation: its out-of-fold
estimates give the honest held-out APGR / CPT printed at the end and the reference
score quantiles used for share calibration; then the model is refitted on all rows.
Embeddings are cached under ~/.cache/gearshift/scorer (see `--cache-dir`).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from gearshift.router.scorer.data import load_jsonl
from gearshift.router.scorer.embedding import DEFAULT_CACHE_DIR, cached_embeddings
from gearshift.router.scorer.fit import ALPHA, cross_validated_gains, fit_gain_model
from gearshift.router.scorer.metrics import routing_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="routing JSONL file")
    parser.add_argument("--out", required=True, type=Path, help="weights .npz to write")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="ridge penalty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)

    data = load_jsonl(args.data)
    print(f"{len(data)} prompts, {len(set(data.domains))} domains; embedding (cached)...")
    embeddings = cached_embeddings(data.prompts, args.cache_dir)
    oof = cross_validated_gains(data, embeddings, k=args.folds, seed=args.seed, alpha=args.alpha)
    report = routing_report(oof, data.weak_correct, data.strong_correct)
    meta: dict[str, object] = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": args.data.name,
        "cv_folds": args.folds,
        "cv_apgr": round(report.apgr, 4),
        "cv_cpt50": round(report.cpt50, 4),
        "cv_cpt80": round(report.cpt80, 4),
        "embedding": "all-MiniLM-L6-v2 (normalised)",
    }
    weights = fit_gain_model(
        data, embeddings, alpha=args.alpha, seed=args.seed, calibration_gains=oof, meta=meta
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    weights.save(args.out)
    print(
        f"{args.folds}-fold held-out: APGR {report.apgr:.3f}  CPT(50%) {report.cpt50:.3f}  "
        f"CPT(80%) {report.cpt80:.3f}  (weak {report.weak_accuracy:.3f}, "
        f"strong {report.strong_accuracy:.3f})"
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
