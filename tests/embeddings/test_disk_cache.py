"""An interrupted embedding of a large file resumes from the chunks already on disk.

Embedding the full Quora split takes tens of minutes on a loaded machine; a run that is
stopped must not throw that work away, and a resumed run must give the same vectors as
an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from gearshift.embeddings import shared_embedder
from gearshift.embeddings.disk_cache import cached_embeddings

TEXTS = [
    "How do I reset my password?",
    "What is the capital of France?",
    "The meeting moved to Thursday.",
    "Translate 'good morning' into French.",
    "Why is the sky blue?",
]


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_with_the_chunks_on_disk(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def embed_then_stop(texts: list[str], batch_size: int) -> npt.NDArray[np.float32]:
        if len(calls) == 2:
            raise Interrupted
        calls.append(texts)
        return shared_embedder().embed(texts, batch_size=batch_size)

    with pytest.raises(Interrupted):
        cached_embeddings(TEXTS, tmp_path, chunk_texts=2, embed=embed_then_stop)
    assert calls == [TEXTS[0:2], TEXTS[2:4]]

    resumed: list[list[str]] = []

    def embed(texts: list[str], batch_size: int) -> npt.NDArray[np.float32]:
        resumed.append(texts)
        return shared_embedder().embed(texts, batch_size=batch_size)

    vectors = cached_embeddings(TEXTS, tmp_path, chunk_texts=2, embed=embed)
    assert resumed == [TEXTS[4:]], "only the chunk that was never written is embedded again"
    np.testing.assert_allclose(vectors, shared_embedder().embed(TEXTS), atol=1e-5)
    # Joined into one file; the chunks are gone, and the next run embeds nothing.
    assert [p.suffix for p in tmp_path.iterdir()] == [".npy"]
    again = cached_embeddings(TEXTS, tmp_path, chunk_texts=2, embed=embed)
    assert resumed == [TEXTS[4:]]
    np.testing.assert_array_equal(again, vectors)
