"""Reciprocal rank fusion: one ranking out of the vector and keyword rankings.

RRF needs no score calibration between the two rankers (cosine similarities and
BM25 ranks live on unrelated scales): each chunk scores sum(1 / (k + rank)) over
the rankings it appears in, so a chunk both rankers like rises to the top, and a
chunk only one of them found still surfaces.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from gearshift.retriever.records import Hit

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 64


def query_words(query: str) -> list[str]:
    """The distinct words of a query, lower-cased, in order (at most MAX_QUERY_WORDS)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
    return list(seen)[:MAX_QUERY_WORDS]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    """Fused hits, best first; `vector_similarity` kept from whichever ranking had it."""
    fused: dict[int, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            gain = 1.0 / (k + rank)
            current = fused.get(hit.chunk_id)
            if current is None:
                fused[hit.chunk_id] = replace(hit, score=gain)
            else:
                current.score += gain
                current.vector_similarity = max(current.vector_similarity, hit.vector_similarity)
    return sorted(fused.values(), key=lambda h: (-h.score, h.chunk_id))
