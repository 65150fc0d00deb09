"""The shadow judge's grade is read robustly from what judges actually write."""

from __future__ import annotations

import pytest

from gearshift.router.outcomes.judge_prompt import judge_messages, parse_rating, rating_to_score


@pytest.mark.parametrize(
    ("judgment", "rating"),
    [
        ("The answer is correct and concise. Rating: [[9]]", 9.0),
        ("Compared with the reference [1] the answer misses a step.\nRating: [[4]]", 4.0),
        ("Mostly right. [[7.5]]", 7.5),
        ("I would give it [6].", 6.0),
        ("Rating: 3", 3.0),
        ("**Rating:** 8", 8.0),
        ("Overall 5/10 - it is partly wrong.", 5.0),
        ("On a scale of 1 to 10 I'd say 2 out of 10.", 2.0),
        # The last grade counts: the scale is often quoted before the verdict.
        ("Ratings range from [[1]] to [[10]]; this one earns [[6]]", 6.0),
    ],
)
def test_ratings_are_parsed(judgment: str, rating: float) -> None:
    assert parse_rating(judgment) == rating


@pytest.mark.parametrize("judgment", ["", "The answer is good.", "Rating: [[15]]", "[[0]]"])
def test_no_rating_or_one_out_of_range_is_none(judgment: str) -> None:
    assert parse_rating(judgment) is None


def test_ratings_map_onto_outcome_scores() -> None:
    assert (rating_to_score(1), rating_to_score(10), rating_to_score(5.5)) == (0.0, 1.0, 0.5)


def test_the_prompt_carries_question_reference_and_answer() -> None:
    system, user = judge_messages("Q?", "REF", "ANS")
    assert system.role == "system" and user.role == "user"
    text = user.content
    assert text.index("Q?") < text.index("REF") < text.index("ANS")
    assert "[[rating]]" in text
