"""`synthesize`: one model writes a single answer from the branches' answers and passages.

The model is the one difficulty chose for the question (the general branch's route), and
the answer streams from it. The inputs (each branch's answer, plus the passages a source
branch was grounded in, numbered as in the combined citations) must fit the synthesis
prompt: when they exceed `multi_synthesis_context_chars`, they are packed into groups that
fit and each group is summarised (in parallel), level by level, until the summaries fit,
like a summary tree. Costs one call (plus the summaries) after the slowest branch: use it
when the caller wants one coherent answer drawing on every source.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from gearshift.router.multi.combining import Combination, label, sampling_for
from gearshift.router.multi.concat import concat
from gearshift.runtime.errors import GearshiftError
from gearshift.v1 import common_pb2

log = logging.getLogger(__name__)

INSTRUCTION = (
    "Several sources answered the user's question. Write one answer to the question from "
    "their answers and passages below. Keep citation markers like [3] where you use a "
    "passage, and say so where the sources disagree."
)
SUMMARY = (
    "Summarise the answers and passages below for answering the question "
    "{question!r}. Keep the facts that matter and citation markers like [3]."
)
MAX_LEVELS = 3
CHARS_PER_TOKEN = 4


def blocks_of(c: Combination) -> list[str]:
    """One block per answer: where it came from, the answer, the passages it drew on."""
    out = []
    for branch, text, offset in zip(c.answers, c.texts, c.offsets, strict=True):
        lines = [f"Answer from {label(branch)}:", text]
        for i, passage in enumerate(branch.plan.passages, start=offset + 1):
            lines.append(f"[{i}] {passage.document_title or passage.document_id}: {passage.text}")
        out.append("\n".join(lines))
    return out


def pack(blocks: list[str], budget: int) -> list[list[str]]:
    """Groups of consecutive blocks, each group at most `budget` characters."""
    groups: list[list[str]] = [[]]
    used = 0
    for block in blocks:
        block = block[:budget]
        if groups[-1] and used + len(block) > budget:
            groups.append([])
            used = 0
        groups[-1].append(block)
        used += len(block)
    return groups


async def summarise(
    c: Combination, group: list[str], prompt: str, sampling: common_pb2.SamplingParams
) -> str:
    messages = [
        common_pb2.ChatMessage(role="system", content=prompt),
        common_pb2.ChatMessage(role="user", content="\n\n".join(group)),
    ]
    return await c.ask(c.plan.general, messages, sampling)


async def fit(c: Combination, blocks: list[str], budget: int) -> list[str]:
    """The blocks, summarised level by level until they fit `budget` characters."""
    level = 0
    while sum(len(b) for b in blocks) > budget and level < MAX_LEVELS:
        groups = pack(blocks, budget)
        # Half the budget for the summaries: one level is then usually enough.
        tokens = max(16, budget // (2 * CHARS_PER_TOKEN * len(groups)))
        sampling = sampling_for(c.plan.base.sampling, tokens)
        prompt = SUMMARY.format(question=c.plan.base.question[:500])
        blocks = list(await asyncio.gather(*(summarise(c, g, prompt, sampling) for g in groups)))
        level += 1
        c.reason = (
            f"synthesize: inputs summarised in a tree ({level} levels, "
            f"{len(groups)} groups at the last)"
        )
    if sum(len(b) for b in blocks) > budget:  # still too long: cut each block evenly
        share = budget // max(len(blocks), 1)
        blocks = [b[:share] for b in blocks]
    return blocks


async def synthesize(c: Combination) -> AsyncIterator[str]:
    if len(c.answers) == 1:
        c.reason = f"synthesize: only {label(c.answers[0])} answered; its answer as is"
        c.finish = c.answers[0].finish
        yield c.texts[0]
        return
    sent = False
    try:
        blocks = await fit(c, blocks_of(c), c.config.synthesis_context_chars)
        system = INSTRUCTION + "\n\n" + "\n\n".join(blocks)
        messages = [common_pb2.ChatMessage(role="system", content=system), *c.plan.base.messages]
        sampling = sampling_for(c.plan.base.sampling)
        async for chunk in c.call(c.plan.general, messages, sampling, stream=c.plan.base.stream):
            if chunk.finish_reason:
                c.finish = chunk.finish_reason
            if chunk.text_delta:
                sent = True
                yield chunk.text_delta
        c.reason = c.reason or f"synthesize: {len(c.answers)} answers written into one"
        c.reason += f" by {c.combined_by}"
    except GearshiftError as exc:
        if sent:
            raise
        log.warning("request %s: synthesis failed: %s", c.plan.base.request_id, exc.message)
        async for part in concat(c):
            yield part
        c.reason = f"synthesize failed ({exc.message}): the answers concatenated instead"
        c.finish = common_pb2.FINISH_REASON_STOP
