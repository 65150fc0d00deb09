"""The escalation estimator: answer features, direction of its verdicts, calibration, fitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gearshift.learn.cascade.fit import fit_escalation
from gearshift.learn.openended import load_small_model_answers
from gearshift.router.cascade.estimator import (
    EscalationEstimator,
    EscalationWeights,
    load_default_estimator,
)
from gearshift.router.cascade.features import (
    ANSWER_FEATURE_NAMES,
    AnswerSignals,
    answer_features,
)
from gearshift.router.cascade.policy import EscalationPolicy
from gearshift.v1 import common_pb2
from tests.shared_data import shared_data

ANSWERS = "openended/alpacaeval2_small_model_answers.jsonl"
PROMPT = "Explain how vaccines train the immune system, with an example."
GOOD = (
    "Vaccines expose the immune system to a harmless piece or weakened form of a pathogen.\n\n"
    "1. **Recognition**: antigen-presenting cells show the antigen to T cells.\n"
    "2. **Response**: B cells make antibodies that bind the antigen.\n"
    "3. **Memory**: memory B and T cells remain, so a later infection is fought off fast.\n\n"
    "Example: the measles vaccine uses a weakened virus; two doses give lifelong protection "
    "to about 97% of people."
)
REFUSAL = "I'm sorry, I cannot help with that."


def feature(prompt: str, answer: str, name: str, signals: AnswerSignals | None = None) -> float:
    return float(answer_features(prompt, answer, signals)[ANSWER_FEATURE_NAMES.index(name)])


def test_answer_features_read_what_they_say() -> None:
    assert feature(PROMPT, REFUSAL, "refusal") == 1.0
    assert feature(PROMPT, GOOD, "refusal") == 0.0
    assert feature(PROMPT, "The immune system learns to", "unfinished") == 1.0
    assert feature(PROMPT, GOOD, "unfinished") == 0.0
    assert feature(PROMPT, "yes yes yes yes yes yes yes yes", "repeated_trigram_share") > 0.5
    assert feature(PROMPT, GOOD, "log_list_items") > 1.0
    lps = AnswerSignals(finish_length=True, logprobs=(-0.1, -2.5))
    assert feature(PROMPT, GOOD, "truncated", lps) == 1.0
    assert feature(PROMPT, GOOD, "mean_logprob", lps) == pytest.approx(-1.3)
    assert feature(PROMPT, "", "log_answer_words") == 0.0  # empty answers do not crash


def test_poor_answers_escalate_more_than_a_thorough_one() -> None:
    estimator = load_default_estimator()
    good = estimator.escalate(PROMPT, GOOD)
    for poor in (REFUSAL, "Vaccines train it.", "vaccines vaccines vaccines vaccines vaccines"):
        assert estimator.escalate(PROMPT, poor) > good, poor
    unsure = AnswerSignals(logprobs=(-2.5,) * 40)
    sure = AnswerSignals(logprobs=(-0.05,) * 40)
    assert estimator.escalate(PROMPT, GOOD, unsure) > estimator.escalate(PROMPT, GOOD, sure)
    cut = AnswerSignals(finish_length=True)
    assert estimator.escalate(PROMPT, GOOD, cut) > good


def test_policy_thresholds() -> None:
    stop = common_pb2.FINISH_REASON_STOP
    assert EscalationPolicy(0.2, fixed_threshold=0.0).judge(PROMPT, GOOD, stop).escalate
    assert not EscalationPolicy(0.2, fixed_threshold=1.0).judge(PROMPT, REFUSAL, stop).escalate
    strict, loose = EscalationPolicy(0.05), EscalationPolicy(0.5)
    assert strict.threshold > loose.threshold
    verdict = loose.judge(PROMPT, REFUSAL, stop)
    assert verdict.reason("slm").startswith("cascade: slm answer escalate")


def test_share_calibration_and_ranking_on_reference_answers() -> None:
    data = load_small_model_answers(shared_data(ANSWERS))
    estimator = load_default_estimator()
    values = estimator.escalate_many(data.prompts, data.answers)
    for share in (0.1, 0.3, 0.5):
        sent = float((values >= estimator.threshold_for_share(share)).mean())
        assert abs(sent - share) < 0.02, (share, sent)
    # Escalated answers are worse ones: judged score of the top fifth vs the rest.
    top = values >= np.quantile(values, 0.8)
    assert data.p_good[top].mean() < data.p_good[~top].mean()


def test_fit_learns_from_labelled_answers(tmp_path: Path) -> None:
    """Outcomes where one-line answers were bad and structured ones good: fit learns it."""
    rng = np.random.default_rng(0)
    prompts, answers, good = [], [], []
    for i in range(200):
        prompt = f"Question {i}: how do I plan a {rng.choice(['trip', 'garden', 'budget'])}?"
        if i % 2:
            answers.append(f"Just do it {i}.")
            good.append(0.1)
        else:
            steps = "\n".join(f"{k}. Step {k} for item {i}." for k in range(1, 5))
            answers.append(f"Here is a plan:\n{steps}\nGood luck.")
            good.append(0.9)
        prompts.append(prompt)
    weights = fit_escalation(prompts, answers, good)
    path = tmp_path / "esc.npz"
    weights.save(path)
    estimator = EscalationEstimator(EscalationWeights.load(path))
    values = estimator.escalate_many(prompts, answers)
    bad = np.asarray(good) < 0.5
    assert values[bad].min() > values[~bad].max()
    with pytest.raises(ValueError):
        fit_escalation(prompts[:1], answers[:1], good[:1])


def test_extreme_logprobs_do_not_saturate_and_threshold_one_never_escalates() -> None:
    """Found on SmolLM2's real answers: one -20 token drove `escalate` to exactly 1.0."""
    wild = AnswerSignals(logprobs=(-0.5, -20.0, -30.0, -1.0))
    value = load_default_estimator().escalate(PROMPT, "Vaccines.", wild)
    assert value < 1.0
    verdict = EscalationPolicy(0.2, fixed_threshold=1.0).judge(
        PROMPT, REFUSAL, common_pb2.FINISH_REASON_LENGTH
    )
    assert not verdict.escalate
