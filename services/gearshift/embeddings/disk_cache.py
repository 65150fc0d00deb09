"""Embeddings of a whole data file, cached on disk outside the repository.

Training and evaluation (the difficulty scorer on routing prompts, the cache's verifier
on Quora questions) embed the same fixed files again and again; on a shared CPU that
takes minutes each time. The key is the texts' content plus `EMBEDDING_VERSION`, so a
changed file or a changed embedder never reads stale vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.embeddings.model import EMBEDDING_VERSION, shared_embedder


def texts_key(texts: Sequence[str]) -> str:
    """Content hash of a list of texts (order matters)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:24]


def cached_embeddings(
    texts: Sequence[str], folder: Path, batch_size: int = 64
) -> npt.NDArray[np.float32]:
    """Unit vectors of `texts`, one row each, read from (or written to) `folder`."""
    path = folder / f"emb-{EMBEDDING_VERSION}-{texts_key(texts)}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape[0] == len(texts):
            return np.asarray(cached, dtype=np.float32)
    vectors = shared_embedder().embed(list(texts), batch_size=batch_size)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors
