"""Embeddings of a whole data file, cached on disk outside the repository.

Training and evaluation (the difficulty scorer on routing prompts, the cache's verifier
on Quora questions) embed the same fixed files again and again; on a shared CPU that
takes minutes each time. The key is the texts' content plus `EMBEDDING_VERSION`, so a
changed file or a changed embedder never reads stale vectors.

A large file (the ~97k Quora questions take tens of minutes on a loaded 2-core machine)
is embedded in chunks, each written to disk as soon as it is done, so an interrupted run
resumes where it stopped instead of starting over. When every chunk exists they are
joined into the one file later runs read, and the chunks are removed.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.embeddings.model import EMBEDDING_VERSION, shared_embedder

# Texts per chunk on disk: about a minute of a loaded CPU, 3 MB of vectors.
CHUNK_TEXTS = 2048

EmbedFn = Callable[[list[str], int], npt.NDArray[np.float32]]


def texts_key(texts: Sequence[str]) -> str:
    """Content hash of a list of texts (order matters)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:24]


def _save_atomically(path: Path, vectors: npt.NDArray[np.float32]) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)


def _default_embed(texts: list[str], batch_size: int) -> npt.NDArray[np.float32]:
    return shared_embedder().embed(texts, batch_size=batch_size)


def cached_embeddings(
    texts: Sequence[str],
    folder: Path,
    batch_size: int = 64,
    chunk_texts: int = CHUNK_TEXTS,
    embed: EmbedFn | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> npt.NDArray[np.float32]:
    """Unit vectors of `texts`, one row each, read from (or written to) `folder`.

    `progress(done, total)` is called after each chunk (texts embedded so far, including
    chunks found on disk from an earlier, interrupted run).
    """
    embed = embed or _default_embed
    key = f"emb-{EMBEDDING_VERSION}-{texts_key(texts)}"
    path = folder / f"{key}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape[0] == len(texts):
            return np.asarray(cached, dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    if len(texts) <= chunk_texts:
        whole = embed(list(texts), batch_size)
        _save_atomically(path, whole)
        return whole
    # Each chunk's file name carries its own content hash, so a chunk is reused only for
    # exactly the texts it was computed from.
    parts_dir = folder / f"{key}.parts"
    parts_dir.mkdir(exist_ok=True)
    pieces: list[npt.NDArray[np.float32]] = []
    for start in range(0, len(texts), chunk_texts):
        chunk = list(texts[start : start + chunk_texts])
        part = parts_dir / f"{start:08d}-{texts_key(chunk)}.npy"
        vectors: npt.NDArray[np.float32] | None = None
        if part.exists():
            stored = np.load(part)
            if stored.shape[0] == len(chunk):
                vectors = np.asarray(stored, dtype=np.float32)
        if vectors is None:
            vectors = embed(chunk, batch_size)
            _save_atomically(part, vectors)
        pieces.append(vectors)
        if progress is not None:
            progress(start + len(chunk), len(texts))
    joined = np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)
    _save_atomically(path, joined)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return joined
