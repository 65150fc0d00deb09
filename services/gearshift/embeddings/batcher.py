"""Groups concurrent embedding requests into one model call.

One query alone costs ~17 ms on a small CPU, while a batch of 16 costs ~2.5 ms per
query; under load the batcher turns many single calls into few batched ones. The
model runs in a worker thread so the event loop keeps serving while it computes;
requests that arrive meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gearshift.embeddings.model import DIM, Embedder, FloatArray
from gearshift.runtime.aiotasks import cancel_and_wait


@dataclass
class _Pending:
    text: str
    future: asyncio.Future[FloatArray]


class MicroBatcher:
    """Async front of an `Embedder`: `await embed_one(text)` from any coroutine."""

    def __init__(self, embedder: Embedder, max_batch: int = 32, max_wait_ms: float = 1.0) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    @property
    def dim(self) -> int:
        return DIM

    def _ensure_started(self) -> asyncio.Queue[_Pending]:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue))
        return self._queue

    async def embed_vector(self, text: str) -> FloatArray:
        """Embeds one text (a unit float32 vector of length 384), batched with others."""
        queue = self._ensure_started()
        future: asyncio.Future[FloatArray] = asyncio.get_running_loop().create_future()
        await queue.put(_Pending(text, future))
        return await future

    async def embed_one(self, text: str) -> list[float]:
        """Embeds one text; the vector as a plain list (ready for a protobuf field)."""
        vector = await self.embed_vector(text)
        return [float(x) for x in vector]

    async def embed_many(self, texts: Sequence[str]) -> FloatArray:
        """Embeds several texts concurrently through the same batches."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        vectors = await asyncio.gather(*(self.embed_vector(t) for t in texts))
        return np.stack(vectors)

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            first = await queue.get()
            batch = [first]
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(batch) < self.max_batch:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel.
                    async with asyncio.timeout(remaining):
                        batch.append(await queue.get())
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            try:
                vectors = await asyncio.to_thread(
                    self.embedder.embed, [p.text for p in live], len(live)
                )
            except Exception as exc:
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(live)
            for p, vector in zip(live, vectors, strict=True):
                if not p.future.done():
                    p.future.set_result(vector)

    async def close(self) -> None:
        """Stops the batching task; pending callers get CancelledError."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                pending.future.cancel()
            self._queue = None
