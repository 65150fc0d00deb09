"""The hit decision: real differences, text styles, nearest first, and its calibration."""

from __future__ import annotations

import numpy as np
import pytest

from gearshift.cache.decision import Candidate, HitDecider, is_question, pair_style
from gearshift.cache.differences import real_difference
from gearshift.cache.verifier import CalibrationPoint, Verifier
from gearshift.learn.cache.statements import load_statements, run_lookups


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


# Paraphrases the checks used to refuse (about 10% of the statement set's true
# paraphrases): an amount spelled another way, "not" said without a negation word, a
# comparison seen from its other side. None of these sentences is in the dev set.
SAID_OTHERWISE = [
    ("Access tokens expire after 24 hours.", "Access tokens expire after a day."),
    ("Rotate the signing keys every seven days.", "Rotate the signing keys once a week."),
    ("Compare the two release branches.", "Compare both release branches."),
    (
        "The worker no longer writes to the temp folder.",
        "The worker stopped writing to the temp folder.",
    ),
    (
        "Rebuild the index when the manifest is missing.",
        "When there is no manifest, rebuild the index.",
    ),
    ("Mount the secrets volume read-only.", "Mount the secrets volume without write access."),
    ("The job skips unused tables.", "The job skips tables that are not used."),
    (
        "Python is the most popular language in the survey.",
        "No language in the survey is more popular than Python.",
    ),
    ("Rust compiles slower than Go.", "Go compiles faster than Rust."),
    (
        "The basic plan costs less than the premium plan.",
        "The premium plan costs more than the basic plan.",
    ),
]
# Near-duplicates of those with a real difference: they must still be refused.
STILL_DIFFERENT = [
    ("Access tokens expire after 24 hours.", "Access tokens expire after a week.", "numbers"),
    (
        "Rotate the signing keys every seven days.",
        "Rotate the signing keys every seven hours.",
        "replaced",
    ),
    ("Compare the two release branches.", "Compare the three release branches.", "numbers"),
    ("Remove the global state.", "Do not remove the global state.", "negation"),
    ("The manifest is missing.", "The manifest is not missing.", "negation"),
    (
        "Mount the secrets volume read-only.",
        "Do not mount the secrets volume read-only.",
        "negation",
    ),
    (
        "Python is the most popular language in the survey.",
        "Python is not the most popular language in the survey.",
        "negation",
    ),
    ("Rust compiles faster than Go.", "Go compiles faster than Rust.", "trade places"),
    ("Rust compiles faster than Go.", "Rust compiles slower than Go.", "opposite"),
    (
        "K2 is the highest mountain in the range.",
        "Everest is the highest mountain in the range.",
        "numbers",
    ),
]


@pytest.mark.parametrize(("a", "b"), SAID_OTHERWISE)
def test_a_paraphrase_said_otherwise_is_no_real_difference(a: str, b: str) -> None:
    assert real_difference(a, b) == ""
    assert real_difference(b, a) == ""


@pytest.mark.parametrize(("a", "b", "reason"), STILL_DIFFERENT)
def test_near_duplicates_of_the_mended_cases_still_differ(a: str, b: str, reason: str) -> None:
    assert reason in real_difference(a, b)
    assert reason in real_difference(b, a)


def test_question_pairs_keep_the_strict_checks() -> None:
    """The verifier's calibration table was measured with the strict checks on questions."""
    a, b = "How do I rotate keys every 24 hours?", "How do I rotate keys once a day?"
    assert pair_style(a, b) == "question"
    assert "numbers" in real_difference(a, b, question_pair=True)
    assert real_difference(a, b) == ""
    a, b = "Why is my snapshot missing?", "Why is there no snapshot?"
    assert "negation" in real_difference(a, b, question_pair=True)


def test_the_decision_applies_the_strict_checks_to_question_pairs() -> None:
    vector = _unit(7)
    question = "How do I rotate keys every 24 hours?"
    found = [Candidate("How do I rotate keys once a day?", vector, 0.97)]
    decision = _decider(0.9).decide(question, vector, found)
    assert decision.served is None and "numbers" in decision.skipped[0]
    statement = [Candidate("Rotate the keys once a day.", vector, 0.97)]
    served = _decider(0.9).decide("Rotate the keys every 24 hours.", vector, statement)
    assert served.served == 0, served


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
