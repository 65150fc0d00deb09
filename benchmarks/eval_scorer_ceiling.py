"""How far can a router that reads only the prompt get on routing_dev.jsonl?

    python benchmarks/eval_scorer_ceiling.py [--data FILE]

Issue 6 asks for APGR >= 0.72 and CPT(50%) <= 0.25. This script puts the shipped
scorer next to routers that are told things no prompt-only router knows, on the
same 5 folds `gearshift.learn.scorer.evaluate` uses:

- *domain oracle, out-of-fold*: knows each prompt's labelled domain and ranks by the
  domain's mean gain on the other folds;
- *domain oracle, in-sample*: ranks by the mean gain of the very prompts it ranks,
  per domain: the best any router can do whose knowledge stops at the domain;
- *in-sample domain + item signal r*: adds a synthetic per-prompt signal whose
  correlation with the gain *within* a domain is r (the mixing weight that scores
  best is picked, so these rows are optimistic);
- *item oracle*: knows every outcome.

"within r" is the pooled within-domain correlation of a router's score with the
gain (both centred per domain): the part of the ranking that is about the prompt
itself rather than its subject.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.dev.machine import describe_machine
from gearshift.learn.apgr import RoutingReport, routing_report
from gearshift.learn.embed_cache import DEFAULT_CACHE_DIR, cached_embeddings
from gearshift.learn.routing_data import RoutingData, load_jsonl, stratified_folds
from gearshift.learn.scorer.fit import cross_validated_gains

F64 = npt.NDArray[np.float64]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing_dev.jsonl"
SIGNAL_STRENGTHS = (0.05, 0.10, 0.15, 0.20, 0.30)
MIXING_WEIGHTS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


def centred_by_domain(values: F64, domains: npt.NDArray[np.str_]) -> F64:
    out = values.astype(np.float64).copy()
    for name in np.unique(domains):
        rows = domains == name
        out[rows] -= out[rows].mean()
    return out


def within_domain_r(scores: F64, gain: F64, domains: npt.NDArray[np.str_]) -> float:
    s, g = centred_by_domain(scores, domains), centred_by_domain(gain, domains)
    if s.std() == 0:
        return 0.0
    return float(np.corrcoef(s, g)[0, 1])


def domain_means(gain: F64, domains: npt.NDArray[np.str_], rows: npt.NDArray[np.bool_]) -> F64:
    """Each prompt's domain mean gain, computed over `rows` only."""
    means = np.zeros(len(gain))
    for name in np.unique(domains):
        member = domains == name
        known = member & rows
        means[member] = gain[known].mean() if known.any() else gain[rows].mean()
    return means


def out_of_fold_domain_oracle(data: RoutingData, folds: int, seed: int) -> F64:
    domains, gain = np.asarray(data.domains), data.gain
    scores = np.zeros(len(data))
    for train_idx, test_idx in stratified_folds(data.domains, folds, seed=seed):
        train = np.zeros(len(data), dtype=bool)
        train[train_idx] = True
        scores[test_idx] = domain_means(gain, domains, train)[test_idx]
    return scores


def with_item_signal(
    data: RoutingData, base: F64, strength: float, rng: np.random.Generator
) -> RoutingReport:
    """Best report over mixing weights of `base` plus a signal of within-domain r ~ strength."""
    residual = centred_by_domain(data.gain, np.asarray(data.domains))
    residual /= residual.std()
    signal = strength * residual + np.sqrt(1 - strength**2) * rng.standard_normal(len(data))
    reports = [
        routing_report(base + w * base.std() * signal, data.weak_correct, data.strong_correct)
        for w in MIXING_WEIGHTS
    ]
    return max(reports, key=lambda r: r.apgr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="draws per synthetic signal")
    args = parser.parse_args()

    started = time.monotonic()
    data = load_jsonl(args.data)
    domains, gain = np.asarray(data.domains), data.gain
    embeddings = cached_embeddings(data.prompts, DEFAULT_CACHE_DIR)
    rows: list[tuple[str, RoutingReport, str]] = []

    def add(name: str, scores: F64, within: bool = True) -> None:
        report = routing_report(scores, data.weak_correct, data.strong_correct)
        r = f"{within_domain_r(scores, gain, domains):.3f}" if within else "-"
        rows.append((name, report, r))

    def add_signals(name: str, base: F64) -> None:
        for strength in SIGNAL_STRENGTHS:
            draws = [with_item_signal(data, base, strength, rng) for _ in range(args.repeats)]
            mean = RoutingReport(
                apgr=float(np.mean([r.apgr for r in draws])),
                cpt50=float(np.mean([r.cpt50 for r in draws])),
                cpt80=float(np.mean([r.cpt80 for r in draws])),
                weak_accuracy=draws[0].weak_accuracy,
                strong_accuracy=draws[0].strong_accuracy,
                n=len(data),
            )
            rows.append((f"{name} + item signal r={strength:.2f}", mean, f"+{strength:.2f}"))

    rng = np.random.default_rng(args.seed)
    scorer = cross_validated_gains(data, embeddings, k=args.folds, seed=args.seed)
    add("gearshift scorer (cross-validated)", scorer)
    add_signals("gearshift scorer", scorer)
    # Fold-to-fold differences of a domain's mean are all an oracle varies by within a
    # domain, so its within-domain r says nothing; it is left out.
    add(
        "domain oracle, out-of-fold means",
        out_of_fold_domain_oracle(data, args.folds, args.seed),
        within=False,
    )
    in_sample = domain_means(gain, domains, np.ones(len(data), dtype=bool))
    add("domain oracle, in-sample means", in_sample, within=False)
    add_signals("in-sample domain oracle", in_sample)
    add("item oracle", gain + 1e-9 * rng.random(len(data)))

    print(
        f"{args.data.name}: {len(data)} prompts, {len(np.unique(domains))} domains, "
        f"{args.folds} folds (seed {args.seed})"
    )
    print(f"Machine: {describe_machine()}\n")
    print("| router | APGR | CPT(50%) | CPT(80%) | within r |")
    print("|---|---:|---:|---:|---:|")
    for name, r, within in rows:
        print(f"| {name} | {r.apgr:.3f} | {r.cpt50:.3f} | {r.cpt80:.3f} | {within} |")
    print(f"\n({time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
