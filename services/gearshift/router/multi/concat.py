"""`concat`: every answer, each headed by the route or source it came from.

No model call, so it adds nothing but the slowest branch's latency: use it when a person
reads the result and wants to see each side (compare a runbook with general advice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gearshift.router.multi.combining import Combination, label


async def concat(c: Combination) -> AsyncIterator[str]:
    c.reason = f"{len(c.answers)} answers, each attributed to its route"
    for i, (branch, text) in enumerate(zip(c.answers, c.texts, strict=True)):
        yield ("\n\n" if i else "") + f"From {label(branch)}:\n{text}"
