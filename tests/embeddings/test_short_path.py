"""The embedder's short path for a few short texts gives what `encode` gives.

A request's query skips sentence-transformers' `encode` (it costs more than the model on
one short query); the cache and the scorer compare vectors made either way (a stored
entry may have come from a batch), so both must agree.
"""

from __future__ import annotations

import numpy as np

from gearshift.embeddings import shared_embedder

TEXTS = [
    "hi",
    "What is 7 times 8?",
    "Write a Rust function that parses ISO-8601 durations and explain its error handling.",
    "word " * 300,  # longer than one window: embedded window by window either way
]


def test_short_path_matches_encode_alone_and_in_a_padded_batch() -> None:
    embedder = shared_embedder()
    assert embedder.short_path, "all-MiniLM-L6-v2 is transformer -> mean pooling -> normalise"
    try:
        short = [embedder.embed([t])[0] for t in TEXTS] + list(embedder.embed(TEXTS))
        embedder.short_path = False
        full = [embedder.embed([t])[0] for t in TEXTS] + list(embedder.embed(TEXTS))
    finally:
        embedder.short_path = True
    np.testing.assert_allclose(np.stack(short), np.stack(full), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.stack(short), axis=1), 1.0, atol=1e-6)
