"""Precision and recall of the semantic cache's hit decision on two styles of text.

    python benchmarks/eval_cache_precision.py [--dev FILE] [--baseline-rev REV]

1. Questions: the held-out split of the Quora question pairs (question-graph
   components the verifier never saw in training or calibration). For each pair (a,
   b), `a` plays the cached question and `b` the new one; it is served when the
   cache's own decision (`HitDecider`, the exact path first) serves it at the given
   `max_false_hit_rate`. Precision is the share of served pairs that are duplicates;
   recall the share of duplicates served.
2. Statements and instructions (`statement_pairs.json`): every origin sentence of a
   split is stored, each paraphrase and each near-duplicate with a real difference is
   looked up among all of them, as in a cache. A paraphrase is right only when served
   its own origin; any near-duplicate served is wrong. "hits" is the share of
   paraphrases served their own origin.

Plain cosine on the same all-MiniLM-L6-v2 embeddings (nearest neighbour at a
threshold) is the baseline on both, in the same run. With `--baseline-rev`, the default
operating point is also run with the real-difference checks (`differences.py`) of that
git revision, to compare a change of the vetoes in one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.cache.decision import Candidate, HitDecider, pair_style
from gearshift.cache.differences import real_difference
from gearshift.cache.keys import normalise
from gearshift.cache.settings import Settings
from gearshift.cache.verifier import Verifier
from gearshift.dev.machine import describe_machine
from gearshift.learn.cache.qqp import DEFAULT_DEV_FILE, embed_questions, load_pairs
from gearshift.learn.cache.statements import DEV_FILE, load_statements, run_lookups

BOUNDS = (0.05, 0.10, 0.15, 0.20)
Row = tuple[str, float, float, int, str]
DifferenceFn = Callable[[str, str, bool], str]


def differences_at(rev: str) -> DifferenceFn:
    """`real_difference` as it was at git revision `rev` (older ones take two texts)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:services/gearshift/cache/differences.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent,
    ).stdout
    module = types.ModuleType(f"differences_{rev}")
    exec(compile(source, f"differences@{rev}", "exec"), module.__dict__)
    old: Callable[..., str] = module.real_difference

    def difference(q: str, c: str, question_pair: bool) -> str:
        try:
            return old(q, c, question_pair)
        except TypeError:
            return old(q, c)

    return difference


def score(served: npt.NDArray[np.bool_], labels: npt.NDArray[np.bool_]) -> tuple[float, float]:
    n = int(served.sum())
    precision = float((served & labels).sum() / n) if n else 1.0
    recall = float((served & labels).sum() / max(int(labels.sum()), 1))
    return precision, recall


def _label(bound: float, default: float, decider: HitDecider) -> str:
    label = (
        f"cache decision, max_false_hit_rate={bound:.2f} (verifier >= "
        f"{decider.threshold('question'):.3f}, cosine >= {decider.threshold('statement'):.3f})"
    )
    return label + (" **default**" if bound == default else "")


def verifier_at(rev: str) -> Verifier:
    """The verifier weights (trees and calibration table) shipped at git revision `rev`."""
    import tempfile

    blob = subprocess.run(
        ["git", "show", f"{rev}:services/gearshift/cache/verifier_weights.npz"],
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parent,
    ).stdout
    with tempfile.NamedTemporaryFile(suffix=".npz") as handle:
        handle.write(blob)
        handle.flush()
        return Verifier(Path(handle.name))


def question_rows(
    dev: Path,
    settings: Settings,
    verifier: Verifier,
    sample: int = 0,
    baseline: tuple[str, DifferenceFn] | None = None,
) -> tuple[str, list[Row]]:
    pairs = load_pairs(dev)
    part = pairs.subset("heldout")
    if sample:
        # Embedding all 97k questions takes ~10 CPU minutes: a slice of the held-out
        # split gives a quicker, noisier reading (its own embedding cache).
        part.a, part.b = part.a[:sample], part.b[:sample]
        part.label, part.split = part.label[:sample], part.split[:sample]
        vectors = embed_questions(part.a + part.b)
    else:
        vectors = embed_questions(pairs.a + pairs.b)
    u = np.stack([vectors[q] for q in part.a])
    v = np.stack([vectors[q] for q in part.b])
    cosine = np.sum(u * v, axis=1)
    labels = part.label
    exact = np.array([normalise(a) == normalise(b) for a, b in zip(part.a, part.b, strict=True)])
    rows: list[Row] = []
    for threshold in (0.90, 0.95):
        served = exact | (cosine >= threshold)
        rows.append(
            (f"plain cosine >= {threshold:.2f}", *score(served, labels), int(served.sum()), "")
        )
    runs: list[tuple[float, DifferenceFn | None, str]] = [
        (bound, None, "") for bound in sorted({*BOUNDS, settings.max_false_hit_rate})
    ]
    if baseline is not None:
        runs.append((settings.max_false_hit_rate, baseline[1], f" at {baseline[0]}"))
    for bound, difference, suffix in runs:
        decider = HitDecider(verifier, bound, settings.min_similarity)
        if difference is not None and baseline is not None:
            # That revision's decision: its real-difference checks and question table.
            decider = HitDecider(verifier_at(baseline[0]), bound, settings.min_similarity)
            decider.difference = difference
        served = exact.copy()
        for i in np.flatnonzero(~exact):
            found = [Candidate(part.a[i], u[i], float(cosine[i]))]
            served[i] = decider.decide(part.b[i], v[i], found).served is not None
        label = _label(bound, settings.max_false_hit_rate, decider) + suffix
        rows.append((label, *score(served, labels), int(served.sum()), ""))
    if baseline is not None:
        # The decision before the nearest-first decider: the verifier alone (its own hard
        # vetoes inside), at the threshold its table at that revision gives the default.
        old = verifier_at(baseline[0])
        cut_old = old.threshold_for(settings.max_false_hit_rate).threshold
        probs_old = old.predict(part.b, part.a, v, u)
        served = exact | ((cosine >= settings.min_similarity) & (probs_old >= cut_old))
        rows.append(
            (
                f"previous decision: verifier only, weights of {baseline[0]} (p >= {cut_old:.3f})",
                *score(served, labels),
                int(served.sum()),
                "",
            )
        )
    # The goal point: the verifier's ranking cut where it serves 40% of duplicates.
    probs = verifier.predict(part.b, part.a, v, u)
    ranked = np.where(exact, 2.0, np.where(cosine >= settings.min_similarity, probs, -1.0))
    cut = np.sort(ranked[labels])[::-1][int(np.ceil(0.40 * labels.sum())) - 1]
    served = ranked >= cut
    rows.append(
        (
            f"verifier ranking cut at 40% recall (p >= {cut:.3f})",
            *score(served, labels),
            int(served.sum()),
            "",
        )
    )
    which = f"first {sample} pairs of the " if sample else ""
    title = (
        f"Questions: {which}QQP held-out split ({len(part)} pairs, {int(labels.sum())} duplicates)"
    )
    return title, rows


def statement_rows(
    split: str,
    settings: Settings,
    verifier: Verifier,
    baseline: tuple[str, DifferenceFn] | None = None,
) -> tuple[str, list[Row]]:
    data = load_statements(split)
    paraphrases = sum(lk.expected is not None for lk in data.lookups)
    rows: list[Row] = []

    def row(name: str, outcomes: list[tuple[bool, bool, bool]]) -> Row:
        # (served, right, near-duplicate) per lookup
        served = sum(s for s, _, _ in outcomes)
        right = sum(s and r for s, r, _ in outcomes)
        wrong_dup = sum(s and n for s, _, n in outcomes)
        precision = right / served if served else 1.0
        return (name, precision, right / paraphrases, served, f"{wrong_dup} near-duplicates")

    # Plain cosine: the nearest origin, served when its cosine reaches the threshold.
    judge_all = HitDecider(verifier, 0.5, -1.0, [])
    for threshold in (0.90, 0.95):
        outcomes = []
        for lookup, decision, origins in run_lookups(data, judge_all, candidates=1):
            nearest_cos = decision.similarity
            served = nearest_cos >= threshold
            outcomes.append((served, lookup.expected == origins[0], lookup.expected is None))
        rows.append(row(f"plain cosine >= {threshold:.2f}, nearest neighbour", outcomes))
    runs: list[tuple[float, DifferenceFn | None, str]] = [
        (bound, None, "") for bound in sorted({*BOUNDS, settings.max_false_hit_rate})
    ]
    if baseline is not None:
        runs.append((settings.max_false_hit_rate, baseline[1], f" at {baseline[0]}"))
    for bound, difference, suffix in runs:
        decider = HitDecider(verifier, bound, settings.min_similarity)
        if difference is not None and baseline is not None:
            # That revision's decision: its real-difference checks and question table.
            decider = HitDecider(verifier_at(baseline[0]), bound, settings.min_similarity)
            decider.difference = difference
        outcomes = []
        for lookup, decision, origins in run_lookups(data, decider, settings.candidates):
            served = decision.served is not None
            right = served and lookup.expected == origins[decision.served or 0]
            outcomes.append((served, right, lookup.expected is None))
        label = _label(bound, settings.max_false_hit_rate, decider) + suffix
        rows.append(row(label, outcomes))
    negatives = len(data.lookups) - paraphrases
    title = (
        f"Statements and instructions: split '{split}' ({len(data.origins)} stored, "
        f"{paraphrases} paraphrase lookups, {negatives} near-duplicate lookups)"
    )
    return title, rows


def veto_line(split: str, name: str, difference: DifferenceFn) -> str:
    """How often the real-difference checks alone refuse a true paraphrase of its own
    origin, and how many near-duplicates they catch (whatever the cosine)."""
    data = load_statements(split)
    paraphrases = [
        (lk.text, data.origins[lk.expected]) for lk in data.lookups if lk.expected is not None
    ]
    negatives = [lk for lk in data.lookups if lk.expected is None]
    refused = sum(bool(difference(p, o, pair_style(p, o) == "question")) for p, o in paraphrases)
    # A near-duplicate belongs to the origin stored just before it in the file's order.
    caught = 0
    origin_of = {}
    for group in json.loads(DEV_FILE.read_text(encoding="utf-8")):
        for negative in group["negatives"]:
            origin_of[negative["text"]] = group["origin"]
    for lookup in negatives:
        origin = origin_of[lookup.text]
        caught += bool(
            difference(lookup.text, origin, pair_style(lookup.text, origin) == "question")
        )
    return (
        f"- {name}: refuse {refused} of {len(paraphrases)} true paraphrases "
        f"({refused / len(paraphrases):.1%}); catch {caught} of {len(negatives)} near-duplicates"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV_FILE)
    parser.add_argument(
        "--qqp-sample", type=int, default=0, help="first N held-out QQP pairs only (faster)"
    )
    parser.add_argument(
        "--baseline-rev",
        default="",
        help="also run the default point with the real-difference checks of this git revision",
    )
    parser.add_argument(
        "--statements-only", action="store_true", help="skip the QQP table (no embeddings)"
    )
    args = parser.parse_args()

    started = time.monotonic()
    settings = Settings()
    verifier = Verifier()
    baseline = (args.baseline_rev, differences_at(args.baseline_rev)) if args.baseline_rev else None
    print(f"Machine: {describe_machine()}")
    tables = [
        statement_rows("heldout", settings, verifier, baseline),
        statement_rows("all", settings, verifier, baseline),
    ]
    if not args.statements_only:
        tables.insert(0, question_rows(args.dev, settings, verifier, args.qqp_sample, baseline))
    for title, rows in tables:
        print(f"\n{title}\n")
        print("| decision | precision | recall | served | wrong near-duplicates |")
        print("|---|---:|---:|---:|---|")
        for name, precision, recall, n, note in rows:
            print(f"| {name} | {precision:.3f} | {recall:.3f} | {n} | {note} |")
    for split in ("heldout", "all"):
        print(f"\nReal-difference checks alone, statement split '{split}':")
        print(veto_line(split, "now", real_difference))
        if baseline is not None:
            print(veto_line(split, f"at {baseline[0]}", baseline[1]))
    print(f"\n({time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
