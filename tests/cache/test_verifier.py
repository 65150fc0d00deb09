"""The verifier: its numpy tree walk, its features and its shipped calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]

from gearshift.cache.features import FEATURE_NAMES, IdfTable, batch_features, pair_features
from gearshift.cache.verifier import WEIGHTS_FILE, TreeEnsemble, Verifier
from gearshift.embeddings import shared_embedder
from gearshift.learn.cache.train_verifier import export_trees


def test_exported_trees_predict_what_scikit_learn_predicts() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 6)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] + np.sin(3 * x[:, 2]) + 0.3 * rng.normal(size=2000)) > 0
    model = HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=15, random_state=0)
    model.fit(x, y)
    probe = rng.normal(size=(500, 6)).astype(np.float32)
    logits = TreeEnsemble.from_arrays(export_trees(model)).log_odds(probe)
    probs = 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(probs, model.predict_proba(probe)[:, 1], atol=1e-5)


def test_swapped_word_order_is_a_feature() -> None:
    idf = IdfTable()
    same = pair_features(
        "How do I convert dollars to rupees?", "How can I convert dollars to rupees?", 0.98, idf
    )
    swapped = pair_features(
        "How do I convert dollars to rupees?", "How do I convert rupees to dollars?", 0.98, idf
    )
    order = FEATURE_NAMES.index("order_swapped")
    assert same[order] == 0.0
    assert swapped[order] == 1.0


def test_rare_unmatched_words_weigh_more_than_common_ones() -> None:
    idf = IdfTable({"best": 1.0, "citi": 9.0}, default=9.0)
    common = batch_features(
        ["What is the best pizza in New York?"], ["What is the pizza in New York?"], [0.97], idf
    )
    rare = batch_features(
        ["What is the best pizza in New York?"],
        ["What is the best pizza in New York City?"],
        [0.97],
        idf,
    )
    column = FEATURE_NAMES.index("unmatched_idf_sum")
    assert rare[0, column] > common[0, column]


def test_verifier_ranks_a_paraphrase_above_swapped_and_changed_questions() -> None:
    verifier = Verifier()
    question = "How can I convert dollars to rupees?"
    candidates = [
        "How do I convert dollars into rupees?",  # paraphrase
        "How can I convert rupees to dollars?",  # direction swapped
        "How can I convert dollars to euros?",  # different currency
    ]
    vectors = shared_embedder().embed([question, *candidates])
    probs = verifier.predict(
        [question] * 3, candidates, np.repeat(vectors[:1], 3, axis=0), vectors[1:]
    )
    assert probs[0] > probs[1]
    assert probs[0] > probs[2]


def test_shipped_calibration_holds_the_bound_it_promises() -> None:
    verifier = Verifier()
    for bound in (0.05, 0.10, 0.15, 0.20):
        point = verifier.threshold_for(bound)
        assert point.false_hit_rate <= bound
    # The default bound must serve a useful share of duplicates, not just exact hits.
    assert verifier.threshold_for(0.10).recall > 0.10


def test_weights_for_other_features_are_refused(tmp_path: Path) -> None:
    with np.load(WEIGHTS_FILE, allow_pickle=False) as data:
        saved = dict(data)
    saved["feature_names"] = np.array(FEATURE_NAMES[:-1])
    stale = tmp_path / "stale.npz"
    np.savez(stale, **saved)
    with pytest.raises(ValueError, match="retrain"):
        Verifier(stale)
