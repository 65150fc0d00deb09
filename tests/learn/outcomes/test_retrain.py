"""`gearshift scorer train --outcomes`: learns from recorded outcomes, refuses a worse scorer.

The outcomes are written to a real SQLite outcome store as the router records them (with
real all-MiniLM embeddings); the CLI reads them back, fits, checks on a held-out slice and
writes weights the router's reloader accepts.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path

import numpy as np
import pytest

from gearshift.learn.embed_cache import embed_texts
from gearshift.learn.outcomes import retrain
from gearshift.learn.outcomes.labels import OutcomeLabels, held_out_mask, label
from gearshift.router.outcomes.recorder import DecisionRecorder
from gearshift.router.outcomes.records import (
    SOURCE_JUDGE,
    SOURCE_USER,
    Decision,
    Outcome,
    prompt_digest,
)
from gearshift.router.outcomes.store import open_store
from gearshift.router.scorer.prompt_features import prompt_features_many
from gearshift.router.scorer.reload import load_scorer_file

FORMS = ["sonnet", "haiku", "limerick", "short poem", "ballad", "villanelle"]
THEMES = ["the sea", "autumn", "a lost key", "trains", "my grandmother", "the moon"]
THEMES += ["coffee", "winter roads", "a lighthouse", "city rain", "old photographs", "bees"]
COUNTRIES = ["France", "Japan", "Peru", "Kenya", "Norway", "Chile", "Egypt", "Canada"]
COUNTRIES += ["India", "Spain", "Ghana", "Poland", "Vietnam", "Mexico", "Greece", "Nepal"]
COUNTRIES += ["Italy", "Brazil", "Sweden", "Turkey", "Cuba", "Iran", "Laos", "Mali"]
ASKS = ["What is the capital of {}?", "Name the capital city of {}.", "Which city is {}'s capital?"]

# Poems: the small model fails (the user says so); capitals: it answers well.
HARD = [f"Write a {form} about {theme}." for form, theme in itertools.product(FORMS, THEMES)]
EASY = [ask.format(country) for ask, country in itertools.product(ASKS, COUNTRIES)]


def test_labels_follow_the_documented_rules() -> None:
    assert label("slm", 0.2, None) == (False, True)
    assert label("slm", 0.9, None) == (True, True)
    assert label("slm", 0.9, True) == (False, True)
    assert label("slm", 0.1, False) == (False, False)
    assert label("llm", 0.9, None) is None
    assert label("llm", 0.9, True) == (True, True)
    assert label("llm", 0.9, False) == (False, True)


def write_outcomes(target: Path, flip_training_slice: bool, recorded: str = "text") -> None:
    """Decisions for HARD + EASY with user outcomes, stored the way `recorded` says:
    "text" (the default store), "digest" (the router's recorder with
    outcomes_keep_prompt_text off) or "old-digest" (a digest-only row as an older router
    wrote it: no prompt features)."""
    prompts = HARD + EASY
    vectors = embed_texts(prompts)
    ids = [uuid.uuid4().hex for _ in prompts]
    held = held_out_mask(ids, 0.3)
    decisions, outcomes = [], []
    for i, (prompt, response_id) in enumerate(zip(prompts, ids, strict=True)):
        hard = prompt in HARD
        if flip_training_slice and not held[i]:
            hard = not hard
        decisions.append(
            Decision(
                tenant="t",
                response_id=response_id,
                prompt="" if recorded == "old-digest" else prompt,
                prompt_digest=prompt_digest(prompt),
                embedding=vectors[i].astype("<f4").tobytes(),
                difficulty=0.1,
                threshold=0.5,
                tier="slm",
                route="local-slm",
                model="small",
            )
        )
        outcomes.append(Outcome("t", response_id, SOURCE_USER, 0.1 if hard else 0.9))
        # A judge grade that disagrees: the user's feedback must win.
        outcomes.append(Outcome("t", response_id, SOURCE_JUDGE, 0.9 if hard else 0.1))

    async def write() -> None:
        store = open_store(str(target))
        await store.open()
        if recorded == "digest":
            recorder = DecisionRecorder(store, keep_prompt_text=False)
            for d in decisions:
                recorder.record(
                    tenant=d.tenant,
                    response_id=d.response_id,
                    question=d.prompt,
                    embedding=d.embedding_vector().tolist(),
                    difficulty=d.difficulty,
                    threshold=d.threshold,
                    tier=d.tier,
                    route=d.route,
                    model=d.model,
                )
            await recorder.stop()  # writes what is queued
        else:
            await store.add_decisions(decisions)
        for outcome in outcomes:
            await store.add_outcome(outcome)
        await store.close()

    asyncio.run(write())


def train(store: Path, out: Path) -> int:
    return retrain.main(
        [
            "--outcomes",
            str(store),
            "--out",
            str(out),
            "--outcome-weight",
            "1",
            "--min-holdout",
            "10",
        ]
    )


def test_retraining_learns_from_outcomes_and_writes_loadable_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_outcomes(tmp_path / "outcomes", flip_training_slice=False)
    out = tmp_path / "weights.npz"
    assert train(tmp_path / "outcomes", out) == 0
    printed = capsys.readouterr().out
    assert f"{len(HARD) + len(EASY)} labelled answers" in printed
    scorer = load_scorer_file(out)  # what the router's reloader does
    vectors = embed_texts(["Write a sonnet about rivers.", "What is the capital of Austria?"])
    poem, capital = (scorer.score(v.tolist(), t) for v, t in zip(vectors, ["x", "y"], strict=True))
    assert poem > capital
    # Re-calibrated on the deployment's traffic: a 50% share splits it about in half.
    threshold = scorer.threshold_for_share(0.5)
    every = embed_texts(HARD + EASY)
    up = np.mean(
        [scorer.score(v.tolist(), t) >= threshold for v, t in zip(every, HARD + EASY, strict=True)]
    )
    assert 0.4 <= up <= 0.6


def test_digest_only_outcomes_train_on_stored_features_not_empty_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_outcomes(tmp_path / "outcomes", flip_training_slice=False, recorded="digest")
    labels = retrain.read_labels(str(tmp_path / "outcomes"))
    assert set(labels.prompts) == {""}, "the text itself must not be stored"
    # What retraining reads is exactly what the scorer computes from the text.
    order = [(HARD + EASY).index(p) for p in _prompts_by_id(tmp_path / "outcomes", labels)]
    np.testing.assert_array_equal(labels.features, prompt_features_many(HARD + EASY)[order])
    out = tmp_path / "weights.npz"
    assert train(tmp_path / "outcomes", out) == 0
    assert f"{len(HARD) + len(EASY)} labelled answers" in capsys.readouterr().out
    scorer = load_scorer_file(out)
    vectors = embed_texts(["Write a sonnet about rivers.", "What is the capital of Austria?"])
    poem, capital = (scorer.score(v.tolist(), t) for v, t in zip(vectors, ["x", "y"], strict=True))
    assert poem > capital


def _prompts_by_id(store: Path, labels: OutcomeLabels) -> list[str]:
    """The original prompt of each labelled answer, found through its stored digest."""
    by_digest = {prompt_digest(p): p for p in HARD + EASY}

    async def read() -> list[str]:
        db = open_store(str(store))
        await db.open()
        try:
            found = []
            for response_id in labels.response_ids:
                decision = await db.get_decision("t", response_id)
                assert decision is not None
                found.append(by_digest[decision.prompt_digest])
            return found
        finally:
            await db.close()

    return asyncio.run(read())


def test_digest_only_rows_without_features_are_refused_not_trained_as_empty_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_outcomes(tmp_path / "outcomes", flip_training_slice=False, recorded="old-digest")
    out = tmp_path / "weights.npz"
    assert train(tmp_path / "outcomes", out) == retrain.EXIT_REFUSED
    err = capsys.readouterr().err
    assert f"{len(HARD) + len(EASY)} labelled answers left out" in err
    assert "without the prompt features" in err and "nothing to learn from" in err
    assert not out.exists()


def test_a_worse_scorer_is_refused_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The training slice says the opposite of the held-out slice: the fit must lose.
    write_outcomes(tmp_path / "outcomes", flip_training_slice=True)
    out = tmp_path / "weights.npz"
    assert train(tmp_path / "outcomes", out) == retrain.EXIT_REFUSED
    assert "refused: the new scorer is worse" in capsys.readouterr().err
    assert not out.exists()


def test_no_outcomes_is_refused(tmp_path: Path) -> None:
    assert train(tmp_path / "empty", tmp_path / "weights.npz") == retrain.EXIT_REFUSED
