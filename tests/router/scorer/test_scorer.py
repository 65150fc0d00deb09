"""The shipped scorer: weights load, scores behave, hard prompts outrank trivial ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from gearshift.router.scorer import DEFAULT_WEIGHTS, Scorer, load_default_scorer

Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]

# Written in the style of GSM8K and of the MMLU domains where the weak model falls short
# (formal logic, moral scenarios, college CS, machine learning, law); not from the data.
HARD = [
    "A baker sells muffins for $3 each and cookies for $1.50 each. On Monday she sold 48 "
    "muffins and twice as many cookies. On Tuesday she sold 25% fewer muffins and 12 more "
    "cookies than on Monday. How much money did she make over the two days?",
    "Tom has 5 boxes with 24 pencils each. He gives 1/3 of the pencils to his sister and "
    "then buys 18 more. He shares the rest equally among 7 friends. How many pencils does "
    "each friend get?",
    "A train leaves at 9:15 and travels at 80 km per hour for 2.5 hours, then at 60 km per "
    "hour for 45 minutes. How many kilometres has it travelled in total?",
    "Select the best translation into predicate logic: Not every student who studies logic "
    "enjoys it. (Sx: x is a student; Lx: x studies logic; Ex: x enjoys logic)\n"
    "A. ~(∀x)[(Sx • Lx) ⊃ Ex]\nB. (∀x)[(Sx • Lx) ⊃ ~Ex]\nC. (∃x)[(Sx • Lx) • Ex]\n"
    "D. ~(∃x)[(Sx • Lx) • ~Ex]\nAnswer:",
    "For which of these two scenarios does the main character (who uses I/me/my) do "
    "something clearly morally wrong, according to ordinary moral standards in the US as "
    "of 2020? Scenario 1 | I borrowed my neighbour's ladder and returned it the next day. "
    "Scenario 2 | I told my little brother the stove was off when I knew it was hot.\n"
    "A. Wrong, Wrong\nB. Wrong, Not wrong\nC. Not wrong, Wrong\nD. Not wrong, Not wrong\n"
    "Answer:",
    "Statement 1 | A neural network with a single hidden layer can approximate any "
    "continuous function on a compact set. Statement 2 | The VC dimension of a linear "
    "classifier in R^d is d.\nA. True, True\nB. False, False\nC. True, False\n"
    "D. False, True\nAnswer:",
    "A buyer contracted in writing to purchase land from a seller. Before closing, a "
    "hurricane destroyed the barn on the land. The contract was silent on risk of loss, "
    "and the jurisdiction has no statute on point. If the buyer refuses to close, is the "
    "seller likely to succeed in an action for specific performance?\nA. Yes, under the "
    "doctrine of equitable conversion.\nB. No, because the risk of loss was on the "
    "seller.\nC. No, because the barn was a material part of the bargain.\nD. Yes, "
    "because the buyer had insurable interest.\nAnswer:",
    "Which of the following sorting algorithms has a worst-case running time of "
    "O(n log n) and sorts in place?\nA. Merge sort\nB. Heapsort\nC. Quicksort\n"
    "D. Insertion sort\nAnswer:",
]

TRIVIAL = [
    "Hi!",
    "Say hello to my friend Anna.",
    "What colour is the sky on a clear day?",
    "Thanks, that was helpful.",
    "What is the capital of France?",
    "Translate 'good morning' into Spanish.",
    "Write one word that rhymes with cat.",
    "Is water wet?",
]


def test_weights_load_and_are_small() -> None:
    assert DEFAULT_WEIGHTS.exists()
    assert DEFAULT_WEIGHTS.stat().st_size < 400 * 1024
    scorer = load_default_scorer()
    assert scorer is load_default_scorer()  # loaded once
    meta = scorer.weights.meta
    assert float(str(meta["cv_apgr"])) > 0.6
    assert len(scorer.weights.domain_names) == scorer.weights.centroids.shape[0]


def test_scores_are_probabilities_and_batch_matches(embed: Embed) -> None:
    scorer = load_default_scorer()
    texts = HARD[:3] + TRIVIAL[:3]
    vectors = embed(texts)
    single = [scorer.score(v, t) for v, t in zip(vectors, texts, strict=True)]
    batch = scorer.score_many(vectors, texts)
    assert all(0.0 <= s <= 1.0 for s in single)
    assert batch == pytest.approx(single, abs=1e-5)
    # A plain list of floats (what the router passes) works too.
    assert scorer.score(vectors[0].tolist(), texts[0]) == pytest.approx(single[0], abs=1e-6)


def test_hard_prompts_outrank_trivial_ones(embed: Embed) -> None:
    scorer = load_default_scorer()
    hard = scorer.score_many(embed(HARD), HARD)
    trivial = scorer.score_many(embed(TRIVIAL), TRIVIAL)
    assert hard.mean() > trivial.mean() + 0.05
    # Pairwise: most (hard, trivial) pairs are ordered the right way.
    pairs = (hard[:, None] > trivial[None, :]).mean()
    assert pairs > 0.8


def test_rejects_wrong_embedding_size() -> None:
    scorer = load_default_scorer()
    with pytest.raises(ValueError, match="384"):
        scorer.score([0.1] * 10, "hello")
    with pytest.raises(ValueError):
        scorer.score_many(np.zeros((2, 384), dtype=np.float32), ["one"])


def test_threshold_for_share_is_monotone() -> None:
    scorer = load_default_scorer()
    thresholds = [scorer.threshold_for_share(x) for x in (0.0, 0.1, 0.3, 0.5, 0.9, 1.0)]
    assert thresholds == sorted(thresholds, reverse=True)
    assert scorer.calibration.threshold_for_share(0.3) == thresholds[2]
    with pytest.raises(ValueError):
        scorer.threshold_for_share(1.5)


def test_loads_from_a_path(tmp_path: object) -> None:
    scorer = Scorer.load(DEFAULT_WEIGHTS)
    assert scorer.weights.coef.shape[0] == 384 + 22 + 1 + len(scorer.weights.domain_names)
