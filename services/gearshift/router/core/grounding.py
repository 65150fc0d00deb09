"""A grounded prompt from retrieved passages, and the citations that go with the answer.

The passages go into a system message, numbered, each headed by its document and chunk
title, before the caller's conversation; the model is told to answer from them only and
to say so when they do not hold the answer. Passages are cut to a character budget so a
small model's context window is never overrun (the budget is a setting).
"""

from __future__ import annotations

from collections.abc import Sequence

from gearshift.v1 import common_pb2, retriever_pb2, router_pb2

INSTRUCTION = (
    "Answer the user's question using only the numbered passages below from the "
    "{source} data source. Cite passages by number, like [1]. If the passages do not "
    "contain the answer, say that you do not know."
)


def used_passages(
    passages: Sequence[retriever_pb2.Passage], max_chars: int
) -> list[retriever_pb2.Passage]:
    """The best passages that fit the budget (the first one always, cut if it must be)."""
    out: list[retriever_pb2.Passage] = []
    used = 0
    for passage in passages:
        if out and used + len(passage.text) > max_chars:
            break
        out.append(passage)
        used += len(passage.text)
    return out


def grounded_messages(
    source: str,
    passages: Sequence[retriever_pb2.Passage],
    messages: Sequence[common_pb2.ChatMessage],
    max_chars: int,
) -> list[common_pb2.ChatMessage]:
    """The conversation with the passages put in front as a system message."""
    blocks = [INSTRUCTION.format(source=source)]
    budget = max_chars
    for i, passage in enumerate(passages, start=1):
        title = " > ".join(t for t in (passage.document_title, passage.chunk_title) if t)
        text = passage.text[: max(budget, 0)]
        budget -= len(text)
        blocks.append(f"[{i}] {title or passage.document_id}\n{text}")
    system = common_pb2.ChatMessage(role="system", content="\n\n".join(blocks))
    return [system, *messages]


def citations(passages: Sequence[retriever_pb2.Passage]) -> list[router_pb2.Citation]:
    """One citation per passage given to the model, in prompt order ([1] first)."""
    return [
        router_pb2.Citation(
            source=p.source,
            document_id=p.document_id,
            document_title=p.document_title,
            chunk_title=p.chunk_title,
            chunk_index=p.chunk_index,
            score=p.score,
        )
        for p in passages
    ]
