"""The hit decision: real differences, text styles, nearest first, and its calibration."""

from __future__ import annotations

import numpy as np
import pytest

from gearshift.cache.decision import Candidate, HitDecider, is_question, pair_style
from gearshift.cache.differences import real_difference
from gearshift.cache.statements import load_statements, run_lookups
from gearshift.cache.verifier import CalibrationPoint, Verifier


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("Retry a failed call up to three times.", "Retry a failed call up to 5 times.", "numbers"),
        ("Keep every answer for one day.", "Keep every answer for one week.", "units"),
        (
            "Restart the gateway after a deploy.",
            "Do not restart the gateway after a deploy.",
            "negation",
        ),
        ("Enable audit logging on the server.", "Disable audit logging on the server.", "opposite"),
        (
            "Sort the users by age, oldest first.",
            "Sort the users by age, newest first.",
            "opposite",
        ),
        (
            "Translate this page from English into French.",
            "Translate this page from French into English.",
            "trade places",
        ),
        (
            "Save the request body before validating it against the schema.",
            "Validate the request body against the schema before saving it.",
            "exchanged",
        ),
        (
            "Create a pie chart of the monthly revenue.",
            "Create a bar chart of the monthly revenue.",
            "replaced",
        ),
        (
            "Deploy the API in Frankfurt with the old settings.",
            "Deploy the API with the old settings in Dublin.",
            "names",
        ),
    ],
)
def test_real_differences_are_named(a: str, b: str, reason: str) -> None:
    assert reason in real_difference(a, b)
    assert reason in real_difference(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "Restart the gateway after you rotate the certificates.",
            "After rotating the certificates, restart the gateway.",
        ),
        (
            "The router retries a failed backend call two times.",
            "A failed backend call is retried 2 times by the router.",
        ),
        (
            "Send the weekly report to the finance team on Monday.",
            "On Monday, send the finance team the weekly report.",
        ),
        (
            "The service listens on port 8080 for HTTP traffic.",
            "HTTP traffic is served on port 8080 by the service.",
        ),
        (
            "Write a Python script that lists every file in a folder.",
            "Create a Python script to list all files in a folder.",
        ),
    ],
)
def test_paraphrases_show_no_real_difference(a: str, b: str) -> None:
    assert real_difference(a, b) == ""


def test_text_style() -> None:
    assert is_question("How do I enable 2FA?")
    assert is_question("what is the capital of france")
    assert not is_question("Enable 2FA for every admin account.")
    assert pair_style("How do I enable 2FA?", "What is 2FA?") == "question"
    assert pair_style("How do I enable 2FA?", "Enable 2FA for every admin.") == "statement"


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=384).astype(np.float32)
    return v / np.linalg.norm(v)


def _decider(cosine_threshold: float) -> HitDecider:
    return HitDecider(Verifier(), 0.10, 0.6, [CalibrationPoint(cosine_threshold, 0.01, 0.9)])


def test_nearest_candidate_decides_unless_it_shows_a_real_difference() -> None:
    decider = _decider(0.85)
    text = "The proxy retries a failed upstream call up to five times."
    three = Candidate("The proxy retries a failed upstream call up to three times.", _unit(1), 0.97)
    five = Candidate(
        "A failed upstream call is retried up to five times by the proxy.", _unit(2), 0.94
    )
    other = Candidate("The proxy retries failed upstream calls five times at most.", _unit(3), 0.96)
    # The nearest without a difference is served, not a farther one.
    decision = decider.decide(text, _unit(0), [five, other])
    assert decision.served == 1
    # A nearer candidate with a different number is passed over, with its reason.
    decision = decider.decide(text, _unit(0), [five, three])
    assert decision.served == 0
    assert decision.skipped and "different numbers" in decision.skipped[0]


def test_a_nearer_candidate_below_the_threshold_is_a_miss_not_a_farther_hit() -> None:
    decider = _decider(0.95)
    text = "Rotate the API keys every 90 days."
    near = Candidate("Every 90 days, rotate the API keys.", _unit(1), 0.93)
    far = Candidate("Rotate API keys every ninety days.", _unit(2), 0.91)
    decision = decider.decide(text, _unit(0), [far, near])
    assert decision.served is None
    assert decision.judged == 1  # the nearest one was judged, and refused by the threshold
    assert "0.930 < 0.950" in decision.reason


@pytest.mark.parametrize("split", ["calib", "heldout"])
def test_shipped_statement_operating_point_holds_on_the_dev_set(split: str) -> None:
    """At the default bound (0.10), wrong hits stay under 10% of hits on both halves."""
    decider = HitDecider(Verifier(), 0.10, 0.6)
    assert 0.8 < decider.threshold("statement") < 1.0
    data = load_statements(split)
    served = wrong = right = 0
    for lookup, decision, origins in run_lookups(data, decider):
        if decision.served is None:
            continue
        served += 1
        ok = lookup.expected == origins[decision.served]
        right += ok
        wrong += not ok
    paraphrases = sum(lk.expected is not None for lk in data.lookups)
    assert served > 0
    assert wrong / served <= 0.10
    assert right / paraphrases >= 0.45
