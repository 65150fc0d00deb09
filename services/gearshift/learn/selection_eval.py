"""Offline evaluation of the selector on labelled questions (`gearshift route eval`).

The options come from a routes file (DataSources, and ModelRoutes with a description); each
labelled question names the option it should go to, or `none`. The selector runs exactly
as in the router (same index, threshold and margin), so the figures describe the router's
behaviour with those settings. Top-2 counts a question right when its label is the
selector's choice or its next alternative (the runner-up above the threshold, or "none";
after a "none", the best option below the threshold).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gearshift.router.selection.selector import (
    Candidate,
    FloatArray,
    Option,
    OptionIndex,
    select,
)
from gearshift.routes.data_source import load_sources
from gearshift.routes.model_route import load_routes

NONE = "none"


def options_from_file(path: str | Path) -> list[Option]:
    """The file's options: every DataSource, and every ModelRoute with a description."""
    text = Path(path).read_text(encoding="utf-8")
    out = [
        Option(s.name, "source", (s.spec.description, *s.spec.examples), tuple(s.spec.excludes))
        for s in load_sources(text)
    ]
    out += [
        Option(r.name, "model", (r.spec.description, *r.spec.examples), tuple(r.spec.excludes))
        for r in load_routes(text)
        if r.spec.description
    ]
    return out


def read_labelled(path: str | Path) -> list[tuple[str, str]]:
    """(prompt, label) pairs from a JSONL file; a bad line is a ValueError naming it."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                rows.append((str(obj["prompt"]), str(obj["label"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: expected {{prompt, label}}: {exc}") from None
    return rows


def ranked_names(candidates: Sequence[Candidate], threshold: float, margin: float) -> list[str]:
    """The selector's choice, then its next alternative."""
    selection = select(candidates, threshold, margin)
    first = selection.chosen.name if selection.chosen is not None else NONE
    if not candidates:
        return [NONE]
    if first == NONE:
        return [NONE, candidates[0].name]
    runner = candidates[1] if len(candidates) > 1 else None
    second = runner.name if runner is not None and runner.score >= threshold else NONE
    return [first, second]


@dataclass
class EvalReport:
    """Accuracy and confusion of one evaluation."""

    n: int = 0
    top1: int = 0
    top2: int = 0
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    labels: list[str] = field(default_factory=list)

    @property
    def top1_accuracy(self) -> float:
        return self.top1 / self.n if self.n else 0.0

    @property
    def top2_accuracy(self) -> float:
        return self.top2 / self.n if self.n else 0.0

    def table(self) -> str:
        """The confusion matrix (rows: label, columns: choice) and per-label accuracy."""
        names = self.labels
        width = max(8, *(len(n) for n in names)) + 1
        head = "label \\ chosen".ljust(width + 2) + "".join(n[:10].rjust(11) for n in names)
        lines = [head + "   recall"]
        for label in names:
            row = [self.confusion[(label, c)] for c in names]
            total = sum(row)
            recall = self.confusion[(label, label)] / total if total else 0.0
            cells = "".join(str(v).rjust(11) for v in row)
            lines.append(label.ljust(width + 2) + cells + f"   {recall:6.1%}")
        return "\n".join(lines)


def evaluate(
    scored: Iterable[tuple[Sequence[Candidate], str]], threshold: float, margin: float
) -> EvalReport:
    """Scores every question's candidates against its label."""
    report = EvalReport()
    labels: set[str] = set()
    for candidates, label in scored:
        names = ranked_names(candidates, threshold, margin)
        report.n += 1
        report.top1 += names[0] == label
        report.top2 += label in names[:2]
        report.confusion[(label, names[0])] += 1
        labels.update((label, names[0]))
    report.labels = [*sorted(labels - {NONE}), NONE]
    return report


def score_all(
    options: Sequence[Option],
    prompts: Sequence[str],
    embed: Callable[[list[str]], FloatArray],
    embed_prompts: Callable[[list[str]], FloatArray] | None = None,
) -> list[list[Candidate]]:
    """Every prompt's candidates (embeds the options once and the prompts in one batch).

    `embed_prompts` may differ from `embed` (an on-disk cache for a fixed data file).
    """
    index = OptionIndex.build(options, embed)
    embed_prompts = embed_prompts or embed
    vectors = embed_prompts(list(prompts)) if prompts else np.zeros((0, 384), dtype=np.float32)
    return [index.score(v) for v in vectors]


def best_threshold(
    scored: Sequence[tuple[Sequence[Candidate], str]], margin: float
) -> tuple[float, float]:
    """(threshold, top-1 accuracy) maximising top-1 over a grid of 0.00 .. 0.90."""
    best = (0.0, -1.0)
    for step in range(91):
        threshold = step / 100
        accuracy = evaluate(scored, threshold, margin).top1_accuracy
        if accuracy > best[1]:
            best = (threshold, accuracy)
    return best
