"""`best`: a judge model (the large tier by default) picks one answer and says why.

Costs one short call on the judge (its pick and a sentence) after the slowest branch.
Use it when the answers compete (two sources that may disagree, a cheap and a strong
model) and the caller wants one of them unchanged, with the reason recorded in the
decision. A judge that fails or names no answer keeps the first answer and says so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

from gearshift.router.multi.combining import Combination, label, sampling_for
from gearshift.runtime.errors import GearshiftError
from gearshift.v1 import common_pb2

log = logging.getLogger(__name__)

INSTRUCTION = (
    "You are a judge. Several assistants answered the user's question below. Pick the "
    "best answer: the most correct, complete and relevant to the question. Reply with the "
    "number of the best answer on the first line, then one sentence saying why."
)
PICK = re.compile(r"\d+")


def judge_messages(c: Combination) -> list[common_pb2.ChatMessage]:
    blocks = [f"Question: {c.plan.base.question}"]
    for i, (branch, text) in enumerate(zip(c.answers, c.texts, strict=True), start=1):
        blocks.append(f"Answer {i} (from {label(branch)}):\n{text}")
    return [
        common_pb2.ChatMessage(role="system", content=INSTRUCTION),
        common_pb2.ChatMessage(role="user", content="\n\n".join(blocks)),
    ]


def parse_verdict(reply: str, count: int) -> tuple[int, str] | None:
    """(index from 0, why) from the judge's reply, or None when it names no answer."""
    m = PICK.search(reply)
    if m is None or not 1 <= int(m[0]) <= count:
        return None
    why = reply[m.end() :].strip().lstrip(").:-").strip()
    return int(m[0]) - 1, " ".join(why.split())[:300]


async def best(c: Combination) -> AsyncIterator[str]:
    if len(c.answers) == 1:
        c.reason = f"best: only {label(c.answers[0])} answered"
        c.finish = c.answers[0].finish
        yield c.texts[0]
        return
    sampling = sampling_for(c.plan.base.sampling, c.config.judge_max_tokens)
    try:
        reply = await c.ask(c.plan.judge, judge_messages(c), sampling)
    except GearshiftError as exc:
        log.warning("request %s: judge failed: %s", c.plan.base.request_id, exc.message)
        reply, c.reason = "", f"best: the judge failed ({exc.message}); kept the first answer"
    verdict = parse_verdict(reply, len(c.answers)) if reply else None
    if verdict is None:
        index = 0
        if reply:
            c.reason = f"best: the judge named no answer ({reply[:80]!r}); kept the first"
    else:
        index, why = verdict
        c.reason = (
            f"best: {label(c.answers[index])} (judge {c.combined_by}): {why or 'no reason given'}"
        )
    # The combined answer keeps only the chosen answer's citations.
    start = c.offsets[index]
    count = len(c.answers[index].plan.citations)
    c.citations = c.citations[start : start + count]
    c.texts[index] = c.answers[index].text  # its own numbering again
    c.finish = c.answers[index].finish
    yield c.texts[index]
