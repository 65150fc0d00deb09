"""Measures the cosine operating points for statement/instruction text.

    python -m gearshift.learn.cache.calibrate_statements

Runs the cache's own hit decision (`HitDecider`, nearest first, real differences
refused) over the "calib" split of `statement_pairs.json`: every origin stored,
every paraphrase and near-duplicate looked up among all of them. For each cosine
threshold it records the 95% upper bound (Wilson) of the share of served hits that
were wrong (a near-duplicate served, or a paraphrase served another origin) and the
share of paraphrases served their own origin. The table is written to
`statement_calibration.npz`; the service picks from it the threshold for its
`max_false_hit_rate`, as it does from the verifier's table for questions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gearshift.cache.decision import STATEMENT_CALIBRATION_FILE, HitDecider, pick_point
from gearshift.cache.verifier import CalibrationPoint, Verifier
from gearshift.learn.cache.statements import load_statements, run_lookups
from gearshift.learn.cache.train_verifier import wilson_upper


def calibrate(split: str = "all", min_similarity: float = 0.6) -> list[CalibrationPoint]:
    """The statement table measured on `split` (see the module docstring)."""
    data = load_statements(split)
    # Judge every candidate without a real difference: a threshold above any cosine.
    decider = HitDecider(Verifier(), 0.5, min_similarity, [CalibrationPoint(2.0, 0.0, 1.0)])
    scores, right = [], []
    for lookup, decision, origins in run_lookups(data, decider):
        if decision.judged is None or decision.style != "statement":
            continue
        scores.append(decision.confidence)
        right.append(lookup.expected == origins[decision.judged])
    score = np.array(scores)
    correct = np.array(right, dtype=bool)
    paraphrases = sum(lk.expected is not None for lk in data.lookups)
    table = []
    for t in np.unique(score):
        served = score >= t
        wrong = int((served & ~correct).sum())
        table.append(
            CalibrationPoint(
                float(t),
                wilson_upper(wrong, int(served.sum())),
                int((served & correct).sum()) / paraphrases,
            )
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=STATEMENT_CALIBRATION_FILE)
    args = parser.parse_args()
    table = calibrate()
    np.savez_compressed(
        args.out,
        cal_threshold=np.array([p.threshold for p in table], dtype=np.float32),
        cal_false_hit_rate=np.array([p.false_hit_rate for p in table], dtype=np.float32),
        cal_recall=np.array([p.recall for p in table], dtype=np.float32),
    )
    for bound in (0.02, 0.05, 0.1, 0.15, 0.2):
        point = pick_point(table, bound)
        print(
            f"max_false_hit_rate {bound:.2f}: cosine >= {point.threshold:.3f} "
            f"(calib false-hit bound {point.false_hit_rate:.3f}, recall {point.recall:.3f})"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
