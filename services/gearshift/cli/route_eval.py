"""`gearshift route eval`: the selector's accuracy on labelled questions, offline."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def add_eval_parser(rsub: Any) -> None:
    from gearshift.router.selection.selector import DEFAULT_MARGIN, DEFAULT_THRESHOLD

    ev = rsub.add_parser(
        "eval",
        help="top-1/top-2 accuracy of source selection on labelled questions",
        description="Scores each {prompt, label} line (label: an option's name or 'none') "
        "with the router's selector over the options of a routes file.",
    )
    ev.add_argument("--routes", required=True, help="routes YAML (DataSources, ModelRoutes)")
    ev.add_argument("--data", required=True, help="JSONL of {prompt, label}")
    ev.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="selection threshold (default: the router's selection_threshold)",
    )
    ev.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help="selection margin (default: the router's selection_margin)",
    )
    ev.add_argument(
        "--calibrate", action="store_true", help="also report the threshold with the best top-1"
    )
    ev.add_argument(
        "--cache-dir",
        default="~/.cache/gearshift/eval-embeddings",
        help="where the questions' embeddings are kept between runs",
    )
    ev.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from gearshift.embeddings import shared_embedder
    from gearshift.embeddings.disk_cache import cached_embeddings
    from gearshift.learn.selection_eval import (
        best_threshold,
        evaluate,
        options_from_file,
        read_labelled,
        score_all,
    )

    try:
        options = options_from_file(args.routes)
        rows = read_labelled(args.data)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    if not options:
        print(f"error: {args.routes} has no DataSource or described ModelRoute")
        return 2
    known = {o.name for o in options} | {"none"}
    unknown = sorted({label for _, label in rows} - known)
    if unknown:
        print(f"error: labels name no option of {args.routes}: {', '.join(unknown)}")
        return 2
    embedder = shared_embedder()
    start = time.perf_counter()
    folder = Path(args.cache_dir).expanduser()
    candidates = score_all(
        options,
        [p for p, _ in rows],
        embedder.embed,
        lambda texts: cached_embeddings(texts, folder),
    )
    elapsed = time.perf_counter() - start
    scored = list(zip(candidates, [label for _, label in rows], strict=True))
    report = evaluate(scored, args.threshold, args.margin)
    print(f"options: {len(options)}  questions: {report.n}  embedded in {elapsed:.1f} s")
    print(f"threshold {args.threshold:.2f}  margin {args.margin:.2f}")
    print(report.table())
    if args.calibrate:
        for step in range(10, 45, 5):
            sweep = evaluate(scored, step / 100, args.margin)
            print(
                f"  threshold {step / 100:.2f}: top-1 {sweep.top1_accuracy:.3f} "
                f"top-2 {sweep.top2_accuracy:.3f} "
                f"none kept {sweep.confusion[('none', 'none')]}/"
                f"{sum(v for (lab, _), v in sweep.confusion.items() if lab == 'none')}"
            )
        threshold, accuracy = best_threshold(scored, args.margin)
        print(f"best threshold on this data: {threshold:.2f} (top-1 {accuracy:.3f})")
    print(f"accuracy: {report.top1_accuracy:.3f} top2: {report.top2_accuracy:.3f} n: {report.n}")
    return 0
