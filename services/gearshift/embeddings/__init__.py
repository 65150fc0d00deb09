"""The shared sentence embedder (all-MiniLM-L6-v2, offline) and its async micro-batcher.

Both the cache and the router embed questions; they share this module so a query is
embedded once, the same way, and concurrent requests are embedded together.
"""

from gearshift.embeddings.batcher import MicroBatcher
from gearshift.embeddings.model import (
    DIM,
    EMBEDDING_VERSION,
    MODEL_NAME,
    Embedder,
    shared_embedder,
)

__all__ = ["DIM", "EMBEDDING_VERSION", "MODEL_NAME", "Embedder", "MicroBatcher", "shared_embedder"]
