"""Training-time embeddings: the router's own embedder, cached on disk.

At run time the router computes the query embedding once and hands it to the scorer, so
this module is only used by training, evaluation and tests. It embeds with the same
`gearshift.embeddings.Embedder` the router uses (same model, normalisation and handling
of long prompts), so the scorer is trained on exactly what it will see, and caches the
embeddings of a whole file outside the repository because embedding 10k prompts takes
from 30 s to many minutes on a shared CPU.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.embeddings import EMBEDDING_VERSION, shared_embedder

DEFAULT_CACHE_DIR = Path(os.path.expanduser("~/.cache/gearshift/scorer"))


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
    """L2-normalised float32 embeddings, one row per text."""
    return shared_embedder().embed(list(texts), batch_size=batch_size)


def texts_key(texts: Sequence[str]) -> str:
    """Content hash of a list of texts (the cache key)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:24]


def cached_embeddings(
    texts: Sequence[str], cache_dir: Path | None = None
) -> npt.NDArray[np.float32]:
    """Embeddings of `texts`, read from (or written to) the on-disk cache."""
    folder = cache_dir or DEFAULT_CACHE_DIR
    path = folder / f"emb-{EMBEDDING_VERSION}-{texts_key(texts)}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape[0] == len(texts):
            return np.asarray(cached, dtype=np.float32)
    vectors = embed_texts(texts)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors
