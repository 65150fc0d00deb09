"""Long prompts are embedded whole, not cut at the model's 256-word-piece window.

Without windows, every prompt sharing its first ~250 word pieces gets the same vector:
a cache would treat different questions after the same context as one, and the scorer
would never see a question placed after a passage.
"""

from __future__ import annotations

import numpy as np
import pytest

from gearshift.embeddings import Embedder, shared_embedder
from gearshift.embeddings.windows import MAX_WINDOWS, split_into_windows

CONTEXT = (
    "The quarterly report describes revenue, costs, hiring plans, supplier contracts and "
    "the risks the company sees in the coming year, including currency movements, "
    "regulation and competition. "
) * 12


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return shared_embedder()


def test_questions_after_a_long_context_get_different_vectors(embedder: Embedder) -> None:
    revenue, hiring = embedder.embed(
        [
            CONTEXT + "Question: what was the revenue growth in the third quarter?",
            CONTEXT + "Question: summarise the hiring plans in two sentences.",
        ]
    )
    assert float(revenue @ hiring) < 0.999  # truncation made these identical (cosine 1.0)
    assert np.linalg.norm(revenue) == pytest.approx(1.0, abs=1e-5)


def test_the_end_of_a_long_prompt_moves_its_vector_toward_the_end(embedder: Embedder) -> None:
    ending = "Which planet in the solar system has the most moons?"
    long_prompt, ending_alone, context_alone = embedder.embed([CONTEXT + ending, ending, CONTEXT])
    # The long prompt is closer to its question than the context alone is.
    assert float(long_prompt @ ending_alone) > float(context_alone @ ending_alone) + 0.05


def test_short_texts_are_embedded_exactly_as_before(embedder: Embedder) -> None:
    """Vectors already stored in caches stay valid: short texts take the plain path."""
    texts = ["What is the capital of France?", "How do I reset my password?"]
    plain = embedder._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(embedder.embed(texts), plain, atol=1e-6)
    # ...also when a long text shares the batch.
    mixed = embedder.embed([texts[0], CONTEXT + "What is the capital of France?"])
    np.testing.assert_allclose(mixed[0], plain[0], atol=1e-5)


def test_windows_cover_the_text_in_order_within_the_model_window(embedder: Embedder) -> None:
    tokenizer = embedder._model.tokenizer
    text = CONTEXT + "And finally: the question at the very end?"
    windows = split_into_windows(text, tokenizer, embedder.window_tokens)
    assert len(windows) == 2
    assert "".join(w.text for w in windows).replace(" ", "") == text.replace(" ", "")
    for w in windows:
        assert len(tokenizer(w.text, add_special_tokens=False)["input_ids"]) <= 256 - 2


def test_a_huge_prompt_costs_at_most_max_windows_and_keeps_its_ending(
    embedder: Embedder,
) -> None:
    text = CONTEXT * 20 + "The question at the very end?"
    windows = split_into_windows(text, embedder._model.tokenizer, embedder.window_tokens)
    assert len(windows) == MAX_WINDOWS
    assert text.startswith(windows[0].text)
    assert windows[-1].text.endswith("The question at the very end?")
