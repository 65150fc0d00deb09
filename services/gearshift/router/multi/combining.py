"""What every combining strategy shares: the answers, their citations, model calls.

Each branch's answer cites its own passages as [1], [2] ...; here they are renumbered into
one list (branch 2's [1] becomes [k+1] when branch 1 had k passages), so the combined
answer's markers point into the combined citations whatever the strategy keeps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from gearshift.router.core.executor import Executor, add_usage
from gearshift.router.multi.branches import Branch, MultiPlan
from gearshift.router.multi.config import MultiConfig
from gearshift.router.multi.planning import child_plan
from gearshift.router.table.routing_table import Route
from gearshift.v1 import common_pb2, router_pb2

MARKER = re.compile(r"\[(\d+)\]")


def renumber(text: str, offset: int, count: int) -> str:
    """`[i]` -> `[i + offset]` for the branch's own passages (1..count); others unchanged."""

    def shift(m: re.Match[str]) -> str:
        i = int(m[1])
        return f"[{i + offset}]" if 1 <= i <= count else m[0]

    return MARKER.sub(shift, text) if offset else text


def label(branch: Branch) -> str:
    if branch.kind == "source":
        return f"source {branch.name}"
    return f"model {branch.plan.decision.route or branch.name}"


@dataclass
class Combination:
    """The inputs of one combination and what it produced besides text."""

    plan: MultiPlan
    executor: Executor
    config: MultiConfig
    answers: list[Branch]  # the branches that answered, in plan order
    texts: list[str] = field(default_factory=list)  # their answers, markers renumbered
    offsets: list[int] = field(default_factory=list)  # each answer's first citation index
    citations: list[router_pb2.Citation] = field(default_factory=list)
    usage: common_pb2.Usage = field(default_factory=common_pb2.Usage)  # combining calls
    reason: str = ""
    combined_by: str = ""
    # Why the combined answer ended: the kept answer's reason, or the synthesis call's.
    finish: common_pb2.FinishReason.ValueType = common_pb2.FINISH_REASON_STOP

    def __post_init__(self) -> None:
        for branch in self.answers:
            own = branch.plan.citations
            self.offsets.append(len(self.citations))
            self.texts.append(renumber(branch.text, len(self.citations), len(own)))
            self.citations.extend(own)

    async def call(
        self,
        routes: Sequence[Route],
        messages: list[common_pb2.ChatMessage],
        sampling: common_pb2.SamplingParams,
        *,
        stream: bool = False,
    ) -> AsyncIterator[router_pb2.ChatStreamChunk]:
        """One model call made to combine (summary, synthesis, judgment), usage counted."""
        child = child_plan(self.plan.base, list(routes))
        child.messages, child.sampling, child.stream = messages, sampling, stream
        async for chunk in self.executor.run(child):
            if chunk.HasField("usage"):
                add_usage(self.usage, chunk.usage)
            yield chunk
        self.combined_by = child.decision.route

    async def ask(
        self,
        routes: Sequence[Route],
        messages: list[common_pb2.ChatMessage],
        sampling: common_pb2.SamplingParams,
    ) -> str:
        parts = [c.text_delta async for c in self.call(routes, messages, sampling)]
        return "".join(parts).strip()


def sampling_for(
    request: common_pb2.SamplingParams, max_tokens: int | None = None
) -> common_pb2.SamplingParams:
    """Deterministic sampling for a combining call (the caller's stop strings dropped)."""
    out = common_pb2.SamplingParams(temperature=0.0)
    if max_tokens is not None:
        out.max_tokens = max_tokens
    elif request.max_tokens:
        out.max_tokens = request.max_tokens
    return out
