"""The two-stage scorer on prompts unlike MMLU / GSM8K (issue 13, item 1).

The issue's own examples are not among the anchor prompts the second stage is fitted on
(`anchors.py` leaves them out on purpose), so they are held-out checks here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from gearshift.learn.scorer.anchors import easy_prompts, hard_prompts
from gearshift.router.scorer import DEFAULT_WEIGHTS, Scorer, ScorerWeights, load_default_scorer
from tests.shared_data import shared_data

Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]

CHIT_CHAT = [
    "hi",
    "Translate 'good morning' into French.",
    "What is 2+2?",
    "thanks!!",
    "Good afternoon, how's it going?",
    "What's the capital of Italy?",
]
OPEN_HARD = [
    "Prove that there are infinitely many primes.",
    "Derive the Black-Scholes partial differential equation from first principles using "
    "Ito's lemma.",
    "Implement a persistent red-black tree in Haskell and prove that insertion keeps it balanced.",
    "Design a sharded rate limiter for a global API gateway and analyse its failure modes.",
]
VICUNA = "openended/vicunabench_gpt35_vs_vicuna13b.jsonl"


def test_issue_examples_are_held_out_of_the_anchors() -> None:
    anchors = set(easy_prompts()) | set(hard_prompts())
    assert not anchors & set(CHIT_CHAT + OPEN_HARD)


def test_chit_chat_is_easy_and_open_hard_tasks_are_hard(embed: Embed) -> None:
    scorer = load_default_scorer()
    easy = scorer.score_many(embed(CHIT_CHAT), CHIT_CHAT)
    hard = scorer.score_many(embed(OPEN_HARD), OPEN_HARD)
    threshold = scorer.threshold_for_share(0.3)
    assert (easy < threshold).all(), dict(zip(CHIT_CHAT, easy, strict=True))
    assert (hard >= threshold).all(), dict(zip(OPEN_HARD, hard, strict=True))
    assert hard.min() > easy.max()


def test_no_floor_shared_by_unfamiliar_prompts(embed: Embed) -> None:
    """The previous scorer gave 'hi' and the primes proof the same 0.120."""
    scorer = load_default_scorer()
    prompts = CHIT_CHAT + OPEN_HARD
    scores = scorer.score_many(embed(prompts), prompts)
    assert len(set(np.round(scores, 6))) == len(prompts)
    previous = Scorer(dataclasses.replace(scorer.weights, open_stage=None))
    old = previous.score_many(embed(prompts), prompts)
    assert len(set(np.round(old, 6))) < len(prompts)  # the floor this stage removes


def test_no_score_value_shared_by_more_than_five_percent(embed: Embed) -> None:
    prompts = [json.loads(line)["prompt"] for line in shared_data(VICUNA).open(encoding="utf-8")]
    scores = load_default_scorer().score_many(embed(prompts), prompts)
    _, counts = np.unique(np.round(scores, 6), return_counts=True)
    assert counts.max() / len(prompts) <= 0.05


def test_second_stage_survives_save_and_load(tmp_path: Path, embed: Embed) -> None:
    weights = ScorerWeights.load(DEFAULT_WEIGHTS)
    assert weights.open_stage is not None
    path = tmp_path / "w.npz"
    weights.save(path)
    again = Scorer.load(path)
    vec = embed(["hi"])[0]
    assert again.score(vec, "hi") == pytest.approx(load_default_scorer().score(vec, "hi"))


def test_weights_without_second_stage_still_load(tmp_path: Path, embed: Embed) -> None:
    weights = dataclasses.replace(ScorerWeights.load(DEFAULT_WEIGHTS), open_stage=None)
    path = tmp_path / "one-stage.npz"
    weights.save(path)
    scorer = Scorer.load(path)
    assert scorer.weights.open_stage is None
    assert 0.0 <= scorer.score(embed(["hi"])[0], "hi") <= 1.0
