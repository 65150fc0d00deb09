"""Trains the verifier on the QQP dev file and writes `verifier_weights.npz`.

    python -m gearshift.cache.train_verifier [--dev FILE] [--hidden 32]

Splits by question-graph component (see `gearshift.cache.qqp`): the model is
fitted on "train", its calibration table is measured on "calib", and "heldout" is
left to `benchmarks/eval_cache_precision.py`. Needs scikit-learn (the `dev` extra);
the service itself only needs numpy to run the result.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.cache.features import batch_features
from gearshift.cache.qqp import DEFAULT_DEV_FILE, Pairs, embed_questions, load_pairs
from gearshift.cache.verifier import WEIGHTS_FILE, embedding_features

FloatArray = npt.NDArray[np.float32]


def design_matrix(pairs: Pairs, vectors: dict[str, FloatArray], use_embeddings: bool) -> FloatArray:
    """Features of every pair, as the verifier computes them at run time."""
    u = np.stack([vectors[q] for q in pairs.a])
    v = np.stack([vectors[q] for q in pairs.b])
    x = batch_features(pairs.a, pairs.b, np.sum(u * v, axis=1).tolist())
    if use_embeddings:
        x = np.concatenate([x, embedding_features(u, v)], axis=1)
    return x


def wilson_upper(errors: int, n: int, z: float = 1.645) -> float:
    """One-sided 95% upper bound of an error rate (so the bound holds on new data)."""
    if n == 0:
        return 1.0
    p = errors / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(min(1.0, (centre + margin) / denom))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV_FILE)
    parser.add_argument("--hidden", type=int, default=32, help="hidden units; 0 = logistic")
    parser.add_argument("--no-embeddings", action="store_true")
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]

    started = time.monotonic()
    pairs = load_pairs(args.dev)
    vectors = embed_questions(pairs.a + pairs.b)
    use_embeddings = not args.no_embeddings
    train, calib = pairs.subset("train"), pairs.subset("calib")
    # Both orders: the verifier sees (query, cached) and the pair is symmetric anyway.
    x_train = design_matrix(train, vectors, use_embeddings)
    y_train = train.label
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0) + 1e-6
    xs = (x_train - mean) / scale
    if args.hidden > 0:
        mlp = MLPClassifier(
            hidden_layer_sizes=(args.hidden,),
            alpha=1e-3,
            early_stopping=True,
            max_iter=200,
            random_state=0,
        ).fit(xs, y_train)
        w1, b1 = mlp.coefs_[0], mlp.intercepts_[0]
        w2, b2 = mlp.coefs_[1], mlp.intercepts_[1]
    else:
        lr = LogisticRegression(C=1.0, max_iter=2000).fit(xs, y_train)
        w1, b1 = lr.coef_.T, lr.intercept_
        w2, b2 = np.zeros((0,)), np.zeros((0,))
    np.savez_compressed(
        args.out,
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        w1=w1.astype(np.float32),
        b1=b1.astype(np.float32),
        w2=np.asarray(w2, dtype=np.float32),
        b2=np.asarray(b2, dtype=np.float32),
        use_embeddings=np.array(use_embeddings),
        cal_threshold=np.zeros(1, dtype=np.float32),
        cal_false_hit_rate=np.zeros(1, dtype=np.float32),
        cal_recall=np.zeros(1, dtype=np.float32),
    )
    # Calibrate with the run-time code path, on pairs the model was not fitted on.
    from gearshift.cache.verifier import Verifier

    verifier = Verifier(args.out)
    u = np.stack([vectors[q] for q in calib.a])
    v = np.stack([vectors[q] for q in calib.b])
    probs = verifier.predict(calib.a, calib.b, u, v)
    thresholds, fhr, recall = calibration_table(probs, calib.label)
    with np.load(args.out) as data:
        saved = dict(data)
    saved.update(cal_threshold=thresholds, cal_false_hit_rate=fhr, cal_recall=recall)
    np.savez_compressed(args.out, **saved)
    for bound in (0.02, 0.05, 0.1, 0.2):
        point = Verifier(args.out).threshold_for(bound)
        print(
            f"max_false_hit_rate {bound:.2f}: threshold {point.threshold:.3f} "
            f"(calib false-hit bound {point.false_hit_rate:.3f}, recall {point.recall:.3f})"
        )
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes) in {time.monotonic() - started:.0f}s"
    )


if __name__ == "__main__":
    main()
