"""APGR of the shipped scorer on the open-ended dev sets, next to baselines, in one run.

    python -m gearshift.learn.scorer.evaluate_openended --folder ../shared/data/openended

The shipped weights never saw these files' outcomes (their prompts only calibrate the
share threshold), so their rows are held-out numbers. The embedding + logistic
regression baseline IS fitted on each file, by 5-fold cross-validation split by prompt
(label: the strong model scored higher). "first stage only" is the scorer before the
open-prompt stage (a constant gain for unfamiliar prompts, as shipped until 2026-12-02).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.learn.apgr import routing_report
from gearshift.learn.embed_cache import DEFAULT_CACHE_DIR, cached_embeddings
from gearshift.learn.openended import GradedPrompts, load_open_ended, prompt_folds
from gearshift.router.scorer import DEFAULT_WEIGHTS, Scorer, ScorerWeights
from gearshift.router.scorer.model import F32

F64 = npt.NDArray[np.float64]


def logistic_cv(emb: F32, data: GradedPrompts, seed: int) -> F64:
    """Out-of-fold P(strong better) of embedding + logistic regression on this file."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    label = data.strong_score > data.weak_score
    out = np.zeros(len(data))
    for train, test in prompt_folds(data.prompts, 5, seed=seed):
        if label[train].all() or not label[train].any():
            out[test] = label[train].mean()
            continue
        model = LogisticRegression(max_iter=2000).fit(emb[train], label[train])
        out[test] = model.predict_proba(emb[test])[:, 1]
    return out


def max_tie_share(scores: F64) -> float:
    """Largest share of prompts sharing one score (rounded to 6 digits, as written out)."""
    return float(np.unique(np.round(scores, 6), return_counts=True)[1].max() / scores.size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, type=Path, help="the openended/ folder")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)

    weights = ScorerWeights.load(args.weights)
    shipped = Scorer(weights)
    first_stage = Scorer(dataclasses.replace(weights, open_stage=None))
    sets = load_open_ended(args.folder)
    if not sets:
        print(f"no open-ended files in {args.folder}", file=sys.stderr)
        return 2
    print(f"machine: {platform.platform()}, python {platform.python_version()}")
    print(f"weights: {args.weights.name} ({weights.meta.get('second_stage', 'one stage')})\n")
    header = "| router | " + " | ".join(s.name for s in sets) + " |"
    print(header)
    print("|---" * (len(sets) + 1) + "|")
    rows: dict[str, list[str]] = {}
    ties: list[str] = []
    rng = np.random.default_rng(args.seed)
    for data in sets:
        emb = cached_embeddings(data.prompts, args.cache_dir)
        ours = shipped.score_many(emb, data.prompts)
        scores = {
            "gearshift scorer (shipped)": ours,
            "first stage only (previous)": first_stage.score_many(emb, data.prompts),
            "prompt length (longer = harder)": np.asarray(
                [len(p) for p in data.prompts], dtype=np.float64
            ),
            "embedding + logistic regression (5-fold CV on this file)": logistic_cv(
                emb, data, args.seed
            ),
            "random": rng.random(len(data)),
        }
        for name, values in scores.items():
            apgr = routing_report(values, data.weak_score, data.strong_score).apgr
            rows.setdefault(name, []).append(f"{apgr:.3f}")
        ties.append(f"{max_tie_share(ours):.1%}")
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| largest share of one score value (shipped) | " + " | ".join(ties) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
