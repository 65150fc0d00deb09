"""`vote`: the majority over short answers (a multiple-choice letter, a number, a word).

Answers are normalised first ("(B) because ..." and "b." are both "b"; "42 apples" is
"42"), then counted; a tie goes to the answer the large tier gave (the larger model),
then to plan order. No model call: use it for closed questions where several cheap
routes agreeing is evidence, not for prose (two essays never match).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator

from gearshift.router.multi.combining import Combination, label

CHOICE = re.compile(r"^\(?([a-h])\)?(?:[\s.):,]|$)", re.IGNORECASE)
NUMBER = re.compile(r"^[-+]?\d+(?:[.,]\d+)?")
ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*[:\-]?\s*", re.I)


def normalise(text: str) -> str:
    """The comparable core of a short answer."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    first = ANSWER_PREFIX.sub("", first).strip().strip("*").strip()
    if m := CHOICE.match(first):
        return m[1].lower()
    if m := NUMBER.match(first):
        return m[0].replace(",", ".")
    return " ".join(re.sub(r"[^\w\s]", "", first.lower()).split())


async def vote(c: Combination) -> AsyncIterator[str]:
    keys = [normalise(b.text) for b in c.answers]
    counts = Counter(keys)
    top = max(counts.values())
    tied = [k for k in counts if counts[k] == top]
    winner = tied[0]
    note = ""
    if len(tied) > 1:
        larger = [k for i, k in enumerate(keys) if k in tied and c.answers[i].larger]
        if larger:
            winner = larger[0]
            note = " (tie broken by the larger model)"
        else:
            winner = next(k for k in keys if k in tied)
            note = " (tie: no large-tier answer among them, the first in plan order wins)"
    index = next(
        (i for i, k in enumerate(keys) if k == winner and c.answers[i].larger),
        keys.index(winner),
    )
    c.reason = (
        f"vote: {winner!r} from {top} of {len(keys)} answers{note}; "
        f"kept the answer of {label(c.answers[index])}"
    )
    c.finish = c.answers[index].finish
    yield c.texts[index]
