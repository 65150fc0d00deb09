"""The judge prompt (MT-Bench single-answer grading with a reference) and its parser.

The large tier first answers the question itself; that answer is the reference the judge
compares the small model's answer with, as MT-Bench does for questions with a reference
answer (`single-v1-ref`). Judges do not always keep to the `[[rating]]` format, so the
parser falls back, in order, to `[rating]`, `Rating: 7`, `7/10` and `7 out of 10`; the
last match counts (explanations often quote the scale before giving the grade).
"""

from __future__ import annotations

import re

from gearshift.v1 import common_pb2

SYSTEM = "You are a helpful assistant."
TEMPLATE = (
    "[Instruction]\n"
    "Please act as an impartial judge and evaluate the quality of the response provided by "
    "an AI assistant to the user question displayed below. Your evaluation should consider "
    "correctness and helpfulness. You will be given a reference answer and the assistant's "
    "answer. Begin your evaluation by comparing the assistant's answer with the reference "
    "answer. Identify and correct any mistakes. Be as objective as possible. After providing "
    "your explanation, you must rate the response on a scale of 1 to 10 by strictly "
    'following this format: "[[rating]]", for example: "Rating: [[5]]".\n\n'
    "[Question]\n{question}\n\n"
    "[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
MAX_FIELD_CHARS = 6000  # keeps the judge prompt inside a small model's context

_NUMBER = r"(\d+(?:\.\d+)?)"
PATTERNS = (
    re.compile(r"\[\[\s*" + _NUMBER + r"\s*\]\]"),
    re.compile(r"\[\s*" + _NUMBER + r"\s*\]"),
    re.compile(r"rating\s*(?:is|of|:)?\s*\**\s*" + _NUMBER, re.IGNORECASE),
    re.compile(_NUMBER + r"\s*/\s*10\b"),
    re.compile(_NUMBER + r"\s+out\s+of\s+10\b", re.IGNORECASE),
)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + " [...]"


def judge_messages(question: str, reference: str, answer: str) -> list[common_pb2.ChatMessage]:
    """The chat the judge is asked to complete."""
    prompt = TEMPLATE.format(
        question=_clip(question), reference=_clip(reference), answer=_clip(answer)
    )
    return [
        common_pb2.ChatMessage(role="system", content=SYSTEM),
        common_pb2.ChatMessage(role="user", content=prompt),
    ]


def parse_rating(judgment: str) -> float | None:
    """The 1-10 rating in a judgment, or None when it gives none (or one out of range)."""
    for pattern in PATTERNS:
        matches = pattern.findall(judgment)
        for raw in reversed(matches):
            value = float(raw)
            if 1.0 <= value <= 10.0:
                return value
    return None


def rating_to_score(rating: float) -> float:
    """A 1-10 rating as an outcome score in [0, 1] (1 -> 0, 10 -> 1)."""
    return (min(10.0, max(1.0, rating)) - 1.0) / 9.0
