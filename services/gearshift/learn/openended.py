"""The open-ended dev sets (`../shared/data/openended/`) as prompts with graded outcomes.

Unlike `routing_dev.jsonl` (right / wrong per model), these carry judge scores in [0, 1]
per prompt for a strong and a weak model; RouteLLM's PGR works unchanged on scores
(quality = mean score). The AlpacaEval files are CC BY-NC 4.0: they evaluate and calibrate
the scorer and the escalation estimator here and never train shipped weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GradedPrompts:
    """Prompts with the strong and weak model's judged score (higher = better)."""

    name: str
    prompts: list[str]
    categories: list[str]
    weak_score: F64
    strong_score: F64

    def __len__(self) -> int:
        return len(self.prompts)


# (file, label set name, how to read the weak score); strong is the file's strong_score
# except for the weak-pool view, where it is the complement of the pool's mean.
OPEN_ENDED_SETS: tuple[tuple[str, str], ...] = (
    ("alpacaeval2_fn_gpt4turbo_vs_mixtral8x7b.jsonl", "AE2 GPT-4-Turbo vs Mixtral (pairwise)"),
    ("alpacaeval2_weighted_gpt4turbo_vs_openhermes7b.jsonl", "AE2 GPT-4-Turbo vs OpenHermes-7B"),
    ("alpacaeval2_weighted_gpt4turbo_vs_openhermes7b.jsonl", "AE2 vs 28-model weak pool"),
    ("alpacaeval1_gpt4_vs_llama2_7b_chat.jsonl", "AE1 GPT-4 vs Llama-2-7B (vs davinci)"),
    ("vicunabench_gpt35_vs_vicuna13b.jsonl", "Vicuna bench GPT-3.5 vs Vicuna-13B"),
)


def load_graded(path: Path, name: str) -> GradedPrompts:
    """One open-ended file; `name` containing "pool" selects the weak-pool label."""
    prompts: list[str] = []
    categories: list[str] = []
    weak: list[float] = []
    strong: list[float] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                prompts.append(str(row["prompt"]))
                categories.append(str(row.get("category") or "all"))
                if "pool" in name:
                    w = float(row["extra"]["weak_pool_mean_p_beats_gpt4turbo"])
                    weak.append(w)
                    strong.append(1.0 - w)
                else:
                    weak.append(float(row["weak_score"]))
                    strong.append(float(row["strong_score"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not a graded record ({exc})") from exc
    return GradedPrompts(name, prompts, categories, np.asarray(weak), np.asarray(strong))


def load_open_ended(folder: Path) -> list[GradedPrompts]:
    """Every label set of `OPEN_ENDED_SETS` found in `folder`."""
    return [
        load_graded(folder / file, name)
        for file, name in OPEN_ENDED_SETS
        if (folder / file).exists()
    ]


@dataclass(frozen=True)
class SmallModelAnswers:
    """Answers of small models with P(answer preferred over GPT-4-Turbo's)."""

    prompts: list[str]
    answers: list[str]
    models: list[str]
    p_good: F64

    def __len__(self) -> int:
        return len(self.prompts)


def load_small_model_answers(path: Path) -> SmallModelAnswers:
    prompts: list[str] = []
    answers: list[str] = []
    models: list[str] = []
    p: list[float] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                prompts.append(str(row["prompt"]))
                answers.append(str(row["answer"]))
                models.append(str(row.get("model") or "unknown"))
                p.append(float(row["p_beats_gpt4turbo"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not an answer record ({exc})") from exc
    return SmallModelAnswers(prompts, answers, models, np.asarray(p))


def prompt_folds(prompts: list[str], k: int, seed: int = 0) -> list[tuple[F64, F64]]:
    """K (train, test) row-index splits that keep every distinct prompt in one fold."""
    unique = sorted(set(prompts))
    rng = np.random.default_rng(seed)
    folds = rng.permutation(len(unique)) % k
    fold_of_prompt = {p: int(f) for p, f in zip(unique, folds, strict=True)}
    fold = np.asarray([fold_of_prompt[p] for p in prompts])
    every = np.arange(len(prompts))
    return [(every[fold != f], every[fold == f]) for f in range(k)]
