"""Build, evaluate or retrain the escalation estimator's weights file.

    # the shipped file: hand-set prior, calibrated on reference answers
    python -m gearshift.learn.cascade.train \\
        --reference ../shared/data/openended/alpacaeval2_small_model_answers.jsonl \\
        --out services/gearshift/router/cascade/weights.npz
    # fitted on your own labelled answers (JSONL: prompt, answer, p_beats_gpt4turbo or good)
    python -m gearshift.learn.cascade.train --reference mine.jsonl --fit --out w.npz

Every run prints a table (pooled and per-model APGR, prompt-grouped 5-fold
cross-validation where anything is fitted) of the prior, the fitted ridge, the
answer-length and prompt-difficulty baselines and random order, measured in that run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gearshift.learn.apgr import routing_report
from gearshift.learn.cascade.fit import calibrate, fit_linear, prior_weights
from gearshift.learn.openended import (
    F64,
    SmallModelAnswers,
    load_small_model_answers,
    prompt_folds,
)
from gearshift.router.cascade.estimator import EscalationEstimator
from gearshift.router.cascade.features import ANSWER_FEATURE_NAMES, answer_features_many


def load_answers(path: Path) -> SmallModelAnswers:
    """The AlpacaEval answers file, or any JSONL with prompt, answer and `good` in [0, 1]."""
    with open(path, encoding="utf-8") as handle:
        first = json.loads(handle.readline())
    if "p_beats_gpt4turbo" in first:
        return load_small_model_answers(path)
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    try:
        return SmallModelAnswers(
            prompts=[str(r["prompt"]) for r in rows],
            answers=[str(r["answer"]) for r in rows],
            models=[str(r.get("model") or "unknown") for r in rows],
            p_good=np.asarray([float(r["good"]) for r in rows]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: every line needs prompt, answer and good ({exc})") from exc


def _apgr(score: F64, good: F64) -> float:
    """APGR of escalating the highest scores (weak = the answer, strong = the large model)."""
    return routing_report(score, good, 1.0 - good).apgr


def evaluation_rows(data: SmallModelAnswers, seed: int = 0) -> dict[str, F64]:
    """Escalation scores of every compared method on `data` (fitted ones out-of-fold)."""
    features = answer_features_many(data.prompts, data.answers)
    need = 1.0 - data.p_good
    fitted = np.zeros(len(data))
    for train, test in prompt_folds(data.prompts, 5, seed=seed):
        weights = fit_linear(features[train], need[train])
        fitted[test] = EscalationEstimator(weights).raw_many(features[test])
    prior = EscalationEstimator(prior_weights(features)).raw_many(features)
    words = features[:, ANSWER_FEATURE_NAMES.index("log_answer_words")].astype(np.float64)
    return {
        "shipped: hand-set prior": prior,
        "ridge fitted on these answers (5-fold CV)": fitted,
        "answer length (shorter escalates)": -words,
        "random": np.random.default_rng(seed).random(len(data)),
    }


def print_table(data: SmallModelAnswers, rows: dict[str, F64]) -> None:
    models = sorted(
        m for m in set(data.models) if data.p_good[np.asarray(data.models) == m].mean() < 0.5
    )
    labels = np.asarray(data.models)
    print(f"machine: {platform.platform()}, python {platform.python_version()}")
    print(f"{len(data)} answers, {len(set(data.prompts))} prompts, {len(models)} models\n")
    print("| method | pooled | " + " | ".join(models) + " | mean per model |")
    print("|---" * (len(models) + 3) + "|")
    for name, score in rows.items():
        per = [_apgr(score[labels == m], data.p_good[labels == m]) for m in models]
        cells = " | ".join(f"{v:.3f}" for v in per)
        print(f"| {name} | {_apgr(score, data.p_good):.3f} | {cells} | {np.mean(per):.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="labelled answers JSONL")
    parser.add_argument("--out", type=Path, help="weights .npz to write (omit: evaluate only)")
    parser.add_argument("--fit", action="store_true", help="fit on --reference, not the prior")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_answers(args.reference)
    print_table(data, evaluation_rows(data, args.seed))
    if args.out is None:
        return 0
    features = answer_features_many(data.prompts, data.answers)
    need = 1.0 - data.p_good
    base = fit_linear(features, need) if args.fit else prior_weights(features)
    meta: dict[str, object] = {
        "made_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "coefficients": f"fitted on {args.reference.name}" if args.fit else "hand-set prior",
        "calibrated_on": args.reference.name,
    }
    weights = calibrate(base, features, need, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    weights.save(args.out)
    print(f"\nwrote {args.out} ({args.out.stat().st_size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
