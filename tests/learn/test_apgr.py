"""APGR / CPT on tiny examples whose values are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gearshift.learn.apgr import pgr_curve, routing_report

# Gains (strong - weak): +1, 0, 0, +1. Weak accuracy 0.25, strong 0.75: gap 0.5.
WEAK = [False, True, False, False]
STRONG = [True, True, False, True]


def test_perfect_ranking() -> None:
    # Route the two +1 prompts first: PGR at x = 0, .25, .5, .75, 1 is 0, .5, 1, 1, 1.
    x, pgr = pgr_curve([0.9, 0.1, 0.2, 0.8], WEAK, STRONG)
    assert x.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert pgr.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0])
    report = routing_report([0.9, 0.1, 0.2, 0.8], WEAK, STRONG)
    # Trapezoids: .25 * (0 + .5) / 2 + .25 * (.5 + 1) / 2 + .25 + .25 = 0.75.
    assert report.apgr == pytest.approx(0.75)
    assert report.cpt50 == pytest.approx(0.25)
    assert report.cpt80 == pytest.approx(0.5)
    assert report.weak_accuracy == pytest.approx(0.25)
    assert report.strong_accuracy == pytest.approx(0.75)


def test_worst_ranking() -> None:
    # The two 0-gain prompts first: PGR 0, 0, 0, .5, 1 -> area .25 * (.25 + .75) = 0.25.
    report = routing_report([0.1, 0.9, 0.8, 0.2], WEAK, STRONG)
    assert report.apgr == pytest.approx(0.25)
    assert report.cpt50 == pytest.approx(0.75)
    assert report.cpt80 == pytest.approx(1.0)


def test_ties_count_as_random() -> None:
    # A constant score cannot order prompts: the expected (random) curve is a diagonal.
    report = routing_report([0.5] * 4, WEAK, STRONG)
    assert report.apgr == pytest.approx(0.5)
    assert report.cpt50 == pytest.approx(0.5)


def test_negative_gain_last_beats_first() -> None:
    weak = [True, False, False]
    strong = [False, True, True]  # gains -1, +1, +1; gap 1/3
    best = routing_report([0.0, 1.0, 0.9], weak, strong)
    worst = routing_report([1.0, 0.0, 0.1], weak, strong)
    assert best.apgr > 0.5 > worst.apgr
    _, pgr = pgr_curve([0.0, 1.0, 0.9], weak, strong)
    # Routing the two +1 prompts recovers 2/3 of accuracy on a 1/3 gap: PGR 2 (above 1).
    assert pgr[2] == pytest.approx(2.0)
    assert pgr[-1] == pytest.approx(1.0)


def test_random_scores_near_half() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    weak = rng.random(n) < 0.6
    strong = weak | (rng.random(n) < 0.5)
    values = [routing_report(rng.random(n), weak, strong).apgr for _ in range(5)]
    assert abs(float(np.mean(values)) - 0.5) < 0.02


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        routing_report([], [], [])
    with pytest.raises(ValueError):
        routing_report([0.1, 0.2], [True, True], [False, True])  # strong not better
