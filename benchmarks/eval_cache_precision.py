"""Precision and recall of the semantic cache's hit decision on Quora question pairs.

    python benchmarks/eval_cache_precision.py [--dev FILE]

For each pair (a, b) of the held-out split (question-graph components the verifier
never saw in training or calibration), `a` plays the cached question and `b` the
new one. A pair is served when the cache would serve it at its DEFAULT settings:
the exact-match path on normalised text, else cosine >= min_similarity and the
verifier's probability >= the threshold picked for max_false_hit_rate. Precision is
the share of served pairs that are duplicates; recall the share of duplicates
served. Plain cosine thresholds on the same split are the baseline.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.cache.keys import normalise
from gearshift.cache.qqp import DEFAULT_DEV_FILE, embed_questions, load_pairs
from gearshift.cache.settings import Settings
from gearshift.cache.verifier import Verifier
from gearshift.dev.machine import describe_machine


def score(served: npt.NDArray[np.bool_], labels: npt.NDArray[np.bool_]) -> tuple[float, float]:
    n = int(served.sum())
    precision = float((served & labels).sum() / n) if n else 1.0
    recall = float((served & labels).sum() / max(int(labels.sum()), 1))
    return precision, recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV_FILE)
    parser.add_argument("--split", default="heldout", choices=["heldout", "calib", "train"])
    args = parser.parse_args()

    started = time.monotonic()
    settings = Settings()
    pairs = load_pairs(args.dev)
    part = pairs.subset(args.split)
    vectors = embed_questions(pairs.a + pairs.b)
    u = np.stack([vectors[q] for q in part.a])
    v = np.stack([vectors[q] for q in part.b])
    cosine = np.sum(u * v, axis=1)
    labels = part.label
    exact = np.array([normalise(a) == normalise(b) for a, b in zip(part.a, part.b, strict=True)])
    verifier = Verifier()
    probs = verifier.predict(part.a, part.b, u, v)

    rows: list[tuple[str, float, float, int]] = []
    for name, threshold in (("cosine >= 0.90", 0.90), ("cosine >= 0.95", 0.95)):
        served = exact | (cosine >= threshold)
        rows.append((name, *score(served, labels), int(served.sum())))
    for bound in sorted({0.05, 0.10, 0.15, 0.20, settings.max_false_hit_rate}):
        point = verifier.threshold_for(bound)
        served = exact | ((cosine >= settings.min_similarity) & (probs >= point.threshold))
        label = f"verifier, max_false_hit_rate={bound:.2f} (p >= {point.threshold:.3f})"
        if bound == settings.max_false_hit_rate:
            label += " **default**"
        rows.append((label, *score(served, labels), int(served.sum())))
    # The goal point: the verifier's ranking cut where it serves 40% of duplicates.
    ranked = np.where(exact, 2.0, np.where(cosine >= settings.min_similarity, probs, -1.0))
    cut = np.sort(ranked[labels])[::-1][int(np.ceil(0.40 * labels.sum())) - 1]
    served = ranked >= cut
    rows.append(
        (
            f"verifier cut at 40% recall (p >= {cut:.3f}; goal: precision 0.95)",
            *score(served, labels),
            int(served.sum()),
        )
    )

    print(f"Split: {args.split} ({len(part)} pairs, {int(labels.sum())} duplicates)")
    print(f"Machine: {describe_machine()}\n")
    print("| decision | precision | recall | served |")
    print("|---|---:|---:|---:|")
    for name, precision, recall, n in rows:
        print(f"| {name} | {precision:.3f} | {recall:.3f} | {n} |")
    print(f"\n({time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
