"""Trains the verifier on the QQP dev file and writes `verifier_weights.npz`.

    python -m gearshift.learn.cache.train_verifier [--dev FILE] [--trees 300] [--leaves 15]
    # keep the trees, redo the table:
    python -m gearshift.learn.cache.train_verifier --calibrate-only

Splits by question-graph component (see `gearshift.learn.cache.qqp`): the model is
fitted on "train", its calibration table is measured on "calib", and "heldout" is
left to `benchmarks/eval_cache_precision.py`. Needs scikit-learn (the `dev` extra);
the service itself only needs numpy to run the result.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gearshift.cache.features import FEATURE_NAMES, IdfTable, batch_features, fit_idf
from gearshift.cache.verifier import WEIGHTS_FILE
from gearshift.learn.cache.qqp import DEFAULT_DEV_FILE, Pairs, embed_questions, load_pairs

FloatArray = npt.NDArray[np.float32]


def design_matrix(pairs: Pairs, vectors: dict[str, FloatArray], idf: IdfTable) -> FloatArray:
    """Features of every pair, as the verifier computes them at run time."""
    u = np.stack([vectors[q] for q in pairs.a])
    v = np.stack([vectors[q] for q in pairs.b])
    return batch_features(pairs.a, pairs.b, np.sum(u * v, axis=1).tolist(), idf)


def export_trees(model: Any) -> dict[str, npt.NDArray[Any]]:
    """Flattens a fitted HistGradientBoostingClassifier into the arrays `TreeEnsemble` reads."""
    roots, feature, threshold, left, right, value, is_leaf = [], [], [], [], [], [], []
    depth = 0
    offset = 0
    for (tree,) in model._predictors:  # one tree per iteration for a binary classifier
        nodes = tree.nodes
        roots.append(offset)
        feature.append(nodes["feature_idx"])
        threshold.append(nodes["num_threshold"])
        left.append(nodes["left"].astype(np.int64) + offset)
        right.append(nodes["right"].astype(np.int64) + offset)
        value.append(nodes["value"])
        is_leaf.append(nodes["is_leaf"].astype(bool))
        depth = max(depth, int(nodes["depth"].max()))
        offset += len(nodes)
    return {
        "tree_roots": np.array(roots, dtype=np.int32),
        "node_feature": np.concatenate(feature).astype(np.int16),
        "node_threshold": np.concatenate(threshold).astype(np.float64),
        "node_left": np.concatenate(left).astype(np.int32),
        "node_right": np.concatenate(right).astype(np.int32),
        "node_value": np.concatenate(value).astype(np.float32),
        "node_is_leaf": np.concatenate(is_leaf),
        "tree_depth": np.array(depth),
        "baseline": np.array(float(np.ravel(model._baseline_prediction)[0])),
    }


def wilson_upper(errors: int, n: int, z: float = 1.645) -> float:
    """One-sided 95% upper bound of an error rate (so the bound holds on new data)."""
    if n == 0:
        return 1.0
    p = errors / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(min(1.0, (centre + margin) / denom))


def decision_probs(
    verifier: Any, a: list[str], b: list[str], u: FloatArray, v: FloatArray
) -> FloatArray:
    """The verifier's probabilities as the hit decision sees them: 0 for a pair with a
    named real difference (`gearshift.cache.differences`), which is never served."""
    from gearshift.cache.decision import pair_style
    from gearshift.cache.differences import real_difference

    probs: FloatArray = verifier.predict(b, a, v, u)
    differs = np.array(
        [
            bool(real_difference(q, c, pair_style(q, c) == "question"))
            for q, c in zip(b, a, strict=True)
        ]
    )
    probs[differs] = 0.0
    return probs


def recalibrate(dev: Path, out: Path) -> None:
    """Rewrites only the calibration table of `out`, with the decision's vetoes."""
    from gearshift.cache.verifier import Verifier

    pairs = load_pairs(dev)
    vectors = embed_questions(pairs.a + pairs.b)
    calib = pairs.subset("calib")
    u = np.stack([vectors[q] for q in calib.a])
    v = np.stack([vectors[q] for q in calib.b])
    probs = decision_probs(Verifier(out), calib.a, calib.b, u, v)
    thresholds, fhr, recall = calibration_table(probs, calib.label)
    with np.load(out, allow_pickle=False) as data:
        weights = {k: data[k] for k in data.files}
    weights.update(cal_threshold=thresholds, cal_false_hit_rate=fhr, cal_recall=recall)
    np.savez_compressed(out, **weights)


def calibration_table(
    probs: FloatArray, labels: npt.NDArray[np.bool_], points: int = 400
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per threshold: upper bound of the false-hit rate, and recall."""
    thresholds = np.unique(np.quantile(probs, np.linspace(0.0, 1.0, points)))
    positives = max(int(labels.sum()), 1)
    fhr, recall = [], []
    for t in thresholds:
        served = probs >= t
        n = int(served.sum())
        wrong = int((served & ~labels).sum())
        fhr.append(wilson_upper(wrong, n))
        recall.append(int((served & labels).sum()) / positives)
    return (
        thresholds.astype(np.float32),
        np.array(fhr, dtype=np.float32),
        np.array(recall, dtype=np.float32),
    )


def print_operating_points(path: Path) -> None:
    from gearshift.cache.verifier import Verifier

    for bound in (0.02, 0.05, 0.1, 0.15, 0.2):
        point = Verifier(path).threshold_for(bound)
        print(
            f"max_false_hit_rate {bound:.2f}: threshold {point.threshold:.3f} "
            f"(calib false-hit bound {point.false_hit_rate:.3f}, recall {point.recall:.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV_FILE)
    parser.add_argument("--trees", type=int, default=300, help="boosting iterations at most")
    parser.add_argument("--leaves", type=int, default=15, help="leaves per tree")
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    parser.add_argument(
        "--calibrate-only", action="store_true", help="keep the trees; recompute the table"
    )
    args = parser.parse_args()
    if args.calibrate_only:
        recalibrate(args.dev, args.out)
        print_operating_points(args.out)
        return

    from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]

    started = time.monotonic()
    pairs = load_pairs(args.dev)
    vectors = embed_questions(pairs.a + pairs.b)
    train, calib = pairs.subset("train"), pairs.subset("calib")
    idf = fit_idf(sorted(set(train.a) | set(train.b)))
    model = HistGradientBoostingClassifier(
        max_iter=args.trees,
        learning_rate=0.05,
        max_leaf_nodes=args.leaves,
        early_stopping=True,
        random_state=0,
    ).fit(design_matrix(train, vectors, idf), train.label)
    weights: dict[str, Any] = {
        "feature_names": np.array(FEATURE_NAMES),
        **idf.to_arrays(),
        **export_trees(model),
        "cal_threshold": np.zeros(1, dtype=np.float32),
        "cal_false_hit_rate": np.zeros(1, dtype=np.float32),
        "cal_recall": np.zeros(1, dtype=np.float32),
    }
    # Calibrate with the run-time code path, on pairs the model was not fitted on; the
    # uncalibrated weights go to a scratch file so a failed check leaves `--out` as it was.
    from gearshift.cache.verifier import Verifier

    scratch = args.out.with_name(args.out.stem + ".uncalibrated.npz")
    np.savez_compressed(scratch, **weights)
    verifier = Verifier(scratch)
    scratch.unlink()
    u = np.stack([vectors[q] for q in calib.a])
    v = np.stack([vectors[q] for q in calib.b])
    probs = verifier.predict(calib.a, calib.b, u, v)
    reference = model.predict_proba(design_matrix(calib, vectors, idf))[:, 1]
    vetoed = probs == 0.0
    if not np.allclose(probs[~vetoed], reference[~vetoed], atol=1e-4):
        raise SystemExit("exported trees disagree with scikit-learn; not writing weights")
    probs = decision_probs(verifier, calib.a, calib.b, u, v)
    thresholds, fhr, recall = calibration_table(probs, calib.label)
    weights.update(cal_threshold=thresholds, cal_false_hit_rate=fhr, cal_recall=recall)
    np.savez_compressed(args.out, **weights)
    print_operating_points(args.out)
    print(
        f"{model.n_iter_} trees; wrote {args.out} ({args.out.stat().st_size} bytes) "
        f"in {time.monotonic() - started:.0f}s"
    )


if __name__ == "__main__":
    main()
