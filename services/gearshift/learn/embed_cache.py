"""Training-time embeddings: the router's own embedder, cached on disk.

At run time the router computes the query embedding once and hands it to the scorer, so
this module is only used by training, evaluation and tests. It embeds with the same
`gearshift.embeddings.Embedder` the router uses (same model, normalisation and handling
of long prompts), so the scorer is trained on exactly what it will see.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.embeddings import disk_cache, shared_embedder

DEFAULT_CACHE_DIR = Path(os.path.expanduser("~/.cache/gearshift/scorer"))


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
    """L2-normalised float32 embeddings, one row per text."""
    return shared_embedder().embed(list(texts), batch_size=batch_size)


def cached_embeddings(
    texts: Sequence[str], cache_dir: Path | None = None
) -> npt.NDArray[np.float32]:
    """Embeddings of `texts`, cached under `cache_dir` (default ~/.cache/gearshift/scorer)."""
    return disk_cache.cached_embeddings(texts, cache_dir or DEFAULT_CACHE_DIR)
