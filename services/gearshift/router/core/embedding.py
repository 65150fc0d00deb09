"""One embedding per query, shared by the cache lookup and the difficulty scorer.

Embeddings come from the shared all-MiniLM-L6-v2 micro-batcher (`gearshift.embeddings`).
A small LRU in front of it makes exact repeats free: a repeated question is the common
cache hit, and skipping its ~15 ms embedding is what keeps the hit path to a few ms.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict

from opentelemetry import trace

from gearshift.embeddings import MicroBatcher, shared_embedder
from gearshift.embeddings.model import FloatArray

tracer = trace.get_tracer(__name__)


class QueryEmbedder:
    """Async embedder with an LRU of recent questions.

    The LRU is keyed by a 16-byte digest of the question, not the question itself, so
    long prompts do not make it grow: its size is that of the vectors (about 12 KB each
    as Python floats, ~50 MB at 4,096 entries).
    """

    def __init__(self, lru_size: int = 4096) -> None:
        self.lru_size = lru_size
        self._lru: OrderedDict[bytes, list[float]] = OrderedDict()
        self._batcher: MicroBatcher | None = None
        self.hits = 0
        self.misses = 0

    async def start(self) -> None:
        """Loads the model (seconds) off the event loop and warms it up."""
        if self._batcher is None:
            embedder = await asyncio.to_thread(shared_embedder)
            self._batcher = MicroBatcher(embedder)
            await self._batcher.embed_one("warm up")

    async def embed(self, text: str) -> list[float]:
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        cached = self._lru.get(key)
        if cached is not None:
            self._lru.move_to_end(key)
            self.hits += 1
            return cached
        if self._batcher is None:
            await self.start()
        assert self._batcher is not None
        self.misses += 1
        with tracer.start_as_current_span("router.embed"):
            vector = await self._batcher.embed_one(text)
        self._lru[key] = vector
        if len(self._lru) > self.lru_size:
            self._lru.popitem(last=False)
        return vector

    async def embed_many(self, texts: list[str]) -> FloatArray:
        """Unit vectors of several texts in one batch (option metadata; no LRU)."""
        if self._batcher is None:
            await self.start()
        assert self._batcher is not None
        return await self._batcher.embed_many(texts)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
            self._batcher = None
