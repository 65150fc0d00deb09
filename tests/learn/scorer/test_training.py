"""Training: retraining from JSONL works, and share calibration holds on held-out prompts."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.learn.embed_cache import cached_embeddings
from gearshift.learn.routing_data import load_jsonl, stratified_folds
from gearshift.learn.scorer.fit import cross_validated_gains, fit_gain_model
from gearshift.learn.scorer.train import main as train_main
from gearshift.router.scorer import Calibration, Scorer

Embed = Callable[[Sequence[str]], npt.NDArray[np.float32]]


def test_calibration_on_synthetic_scores() -> None:
    rng = np.random.default_rng(1)
    calibration = Calibration.from_scores(rng.beta(2, 5, 20000))
    held_out = rng.beta(2, 5, 20000)
    for share in (0.05, 0.2, 0.5, 0.8):
        sent_up = float((held_out >= calibration.threshold_for_share(share)).mean())
        assert abs(sent_up - share) < 0.015
    assert (held_out >= calibration.threshold_for_share(0.0)).mean() == 0.0
    assert (held_out >= calibration.threshold_for_share(1.0)).mean() > 0.999


def test_calibration_honours_share_cap_on_held_out_prompts(dev_data_path: Path) -> None:
    data = load_jsonl(dev_data_path)
    embeddings = cached_embeddings(data.prompts)  # cached under ~/.cache/gearshift/scorer
    train_idx, test_idx = stratified_folds(data.domains, 5, seed=7)[0]
    train = data.subset(train_idx)
    oof = cross_validated_gains(train, embeddings[train_idx], k=3, seed=7)
    scorer = Scorer(fit_gain_model(train, embeddings[train_idx], calibration_gains=oof))
    held_out = scorer.score_many(embeddings[test_idx], [data.prompts[i] for i in test_idx])
    for share in (0.1, 0.3, 0.5):
        sent_up = float((held_out >= scorer.threshold_for_share(share)).mean())
        assert abs(sent_up - share) < 0.04, (share, sent_up)


def test_retrain_from_jsonl(tmp_path: Path, embed: Embed) -> None:
    rows = []
    for i in range(30):
        rows.append(
            {
                "domain": "arithmetic",
                "prompt": f"A shop sells {i + 3} boxes of {2 * i + 5} apples at ${i + 1}.50 "
                f"each and gives away 1/4 of them. How much money does it make?",
                "weak_correct": i % 4 == 0,
                "strong_correct": True,
            }
        )
        rows.append(
            {
                "domain": "chat",
                "prompt": f"Please say hello to friend number {i}.",
                "weak_correct": True,
                "strong_correct": i % 5 != 0,
            }
        )
    data_file = tmp_path / "traffic.jsonl"
    data_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "weights.npz"
    code = train_main(
        [
            "--data",
            str(data_file),
            "--out",
            str(out),
            "--folds",
            "3",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0 and out.exists()
    scorer = Scorer.load(out)
    assert sorted(scorer.weights.domain_names) == ["arithmetic", "chat"]
    texts = [
        "A farmer has 12 crates of 30 eggs and sells 2/3 of them at $4.25 per dozen. "
        "How much does he earn?",
        "Please say hello to my neighbour.",
    ]
    hard, easy = scorer.score_many(embed(texts), texts)
    assert hard > easy
