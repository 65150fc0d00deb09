"""A document's chunks are replaced in one transaction: a failed write changes nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from gearshift.embeddings import DIM
from gearshift.retriever.backends import Backend, BackendError
from gearshift.retriever.records import ChunkRecord, StoredDocument


def _unit(seed: int) -> np.ndarray:  # type: ignore[type-arg]
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture(params=["usearch", "pgvector"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "usearch":
        from gearshift.retriever.backends.embedded import EmbeddedBackend

        made: Backend = EmbeddedBackend(tmp_path)
    else:
        from gearshift.retriever.backends.pgvector_backend import PgvectorBackend

        made = PgvectorBackend(request.getfixturevalue("postgres_url"))
    await made.open()
    try:
        yield made
    finally:
        await made.close()


async def test_a_failed_replacement_leaves_the_old_chunks(backend: Backend) -> None:
    tenant = f"atomic-{time.monotonic_ns()}"
    doc = StoredDocument(tenant, "src", "a.md", "A", "text/markdown", {}, "hash-1")
    old = [ChunkRecord(0, "A", "the original alpha text", _unit(1))]
    first = await backend.replace_document(doc, old, time.time())

    changed = StoredDocument(tenant, "src", "a.md", "A", "text/markdown", {}, "hash-2")
    broken = [
        ChunkRecord(0, "A", "the replacement bravo text", _unit(2)),
        ChunkRecord(1, "A", "a chunk whose vector is cut short", _unit(3)[:100]),
    ]
    with pytest.raises(BackendError):
        await backend.replace_document(changed, broken, time.time())

    assert [h.text for h in await backend.keyword_search(tenant, "src", ["alpha"], 5)] == [
        "the original alpha text"
    ]
    assert await backend.keyword_search(tenant, "src", ["bravo"], 5) == []
    vector_hits = await backend.vector_search(tenant, "src", _unit(2), 5)
    assert [h.text for h in vector_hits] == ["the original alpha text"]
    (info,) = await backend.sources(tenant, "src")
    assert (info.documents, info.chunks, info.content_version) == (1, 1, first.content_version)
    assert await backend.content_hashes(tenant, "src", ["a.md"]) == {"a.md": ("hash-1", 1)}
