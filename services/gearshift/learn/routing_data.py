"""Labelled routing traffic: the JSONL format of `routing_dev.jsonl`.

One object per line with `prompt`, `weak_correct`, `strong_correct` and, for the domain
priors, `domain` (any label grouping similar traffic; `benchmark` is used when it is
missing). A user retrains on their own traffic by writing the same fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class RoutingData:
    """Prompts with the recorded weak / strong outcomes."""

    prompts: list[str]
    domains: list[str]
    weak_correct: npt.NDArray[np.bool_]
    strong_correct: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def gain(self) -> npt.NDArray[np.float64]:
        """Accuracy gained by routing each prompt up: +1, 0 or -1."""
        return self.strong_correct.astype(np.float64) - self.weak_correct.astype(np.float64)

    def subset(self, index: npt.NDArray[np.intp]) -> RoutingData:
        return RoutingData(
            prompts=[self.prompts[i] for i in index],
            domains=[self.domains[i] for i in index],
            weak_correct=self.weak_correct[index],
            strong_correct=self.strong_correct[index],
        )


def load_jsonl(path: Path | str) -> RoutingData:
    """Reads a routing JSONL file; raises ValueError naming the first bad line."""
    prompts: list[str] = []
    domains: list[str] = []
    weak: list[bool] = []
    strong: list[bool] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                prompts.append(str(row["prompt"]))
                domains.append(str(row.get("domain") or row.get("benchmark") or "all"))
                weak.append(bool(row["weak_correct"]))
                strong.append(bool(row["strong_correct"]))
            except (KeyError, TypeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}:{number}: not a routing record ({exc})") from exc
    if not prompts:
        raise ValueError(f"{path}: no records")
    return RoutingData(prompts, domains, np.asarray(weak), np.asarray(strong))


def stratified_folds(
    labels: list[str], k: int, seed: int = 0
) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
    """K (train, test) index splits with every label spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.intp)
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    offset = 0
    for members in groups.values():
        order = rng.permutation(np.asarray(members, dtype=np.intp))
        fold_of[order] = (np.arange(order.size) + offset) % k
        offset += order.size
    every = np.arange(len(labels), dtype=np.intp)
    return [(every[fold_of != f], every[fold_of == f]) for f in range(k)]
