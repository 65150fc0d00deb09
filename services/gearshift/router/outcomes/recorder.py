"""Records every generated answer's decision, in batches, off the request path.

The request only appends to a bounded in-memory queue (no I/O, no await); a background
task writes the queue to the store every `flush_interval_s` and, once an hour, deletes
what has outlived its retention. When the store falls behind and the queue is full, new
decisions are dropped (counted in a metric): an answer is never delayed for bookkeeping.
Feedback first flushes the queue, so an answer can be rated right after it arrived.

With `keep_prompt_text` off only the question's sha256 is stored, plus what retraining
needs from the text: the scorer's prompt features (counts and ratios the text cannot be
read back from), computed in the background task, not on the request path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque

import numpy as np

from gearshift.router.core.events import AnsweredEvent
from gearshift.router.outcomes import metrics
from gearshift.router.outcomes.records import Decision, prompt_digest
from gearshift.router.outcomes.store import OutcomeStore
from gearshift.router.scorer.prompt_features import (
    PROMPT_FEATURES_VERSION,
    features_to_bytes,
    prompt_features,
)
from gearshift.runtime.aiotasks import cancel_and_wait

log = logging.getLogger(__name__)

PURGE_EVERY_S = 3600.0


def with_features(decision: Decision, question: str) -> Decision:
    """The decision with the prompt features of `question` (unchanged when "")."""
    if not question:
        return decision
    return dataclasses.replace(
        decision,
        features=features_to_bytes(prompt_features(question)),
        features_version=PROMPT_FEATURES_VERSION,
    )


class DecisionRecorder:
    """Bounded queue of decisions and the task that writes them to the store."""

    def __init__(
        self,
        store: OutcomeStore,
        *,
        keep_prompt_text: bool = True,
        queue_max: int = 10_000,
        flush_interval_s: float = 0.5,
        unlabelled_ttl_s: float = 7 * 86400.0,
        labelled_retention_s: float = 0.0,
    ) -> None:
        self.store = store
        self.keep_prompt_text = keep_prompt_text
        self.queue_max = queue_max
        self.flush_interval_s = flush_interval_s
        self.unlabelled_ttl_s = unlabelled_ttl_s
        self.labelled_retention_s = labelled_retention_s
        # Each decision with the question text its features are still to be computed
        # from ("" when the text itself is stored).
        self._queue: deque[tuple[Decision, str]] = deque()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0

    def record(
        self,
        *,
        tenant: str,
        response_id: str,
        question: str,
        embedding: list[float],
        difficulty: float,
        threshold: float,
        tier: str,
        route: str,
        model: str,
    ) -> None:
        """Queues one decision (never blocks; drops and counts when the queue is full)."""
        if len(self._queue) >= self.queue_max:
            metrics.DECISIONS_DROPPED.labels("queue_full").inc()
            return
        decision = Decision(
            tenant=tenant,
            response_id=response_id,
            prompt=question if self.keep_prompt_text else "",
            prompt_digest=prompt_digest(question),
            embedding=np.asarray(embedding, dtype="<f4").tobytes(),
            difficulty=difficulty,
            threshold=threshold,
            tier=tier,
            route=route,
            model=model,
        )
        self._queue.append((decision, "" if self.keep_prompt_text else question))

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> None:
        """Writes everything queued so far; on a store error the batch is put back."""
        async with self._flush_lock:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(500, len(self._queue)))]
                try:
                    await self.store.add_decisions([with_features(d, q) for d, q in batch])
                except BaseException:
                    self._queue.extendleft(reversed(batch))
                    raise
                metrics.DECISIONS_RECORDED.inc(len(batch))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
                if time.monotonic() - self._last_purge > PURGE_EVERY_S:
                    self._last_purge = time.monotonic()
                    await self.purge()
            except Exception as exc:  # keep the queue; retry on the next tick
                log.warning("recording decisions failed (%d queued): %r", self.pending, exc)

    async def purge(self) -> int:
        now = time.time()
        labelled_before = now - self.labelled_retention_s if self.labelled_retention_s else 0.0
        return await self.store.purge(now - self.unlabelled_ttl_s, labelled_before)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="router-decision-recorder")

    async def stop(self) -> None:
        """Stops the task and writes what is still queued (nothing lost on a clean stop)."""
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await self.flush()
        except Exception as exc:
            metrics.DECISIONS_DROPPED.labels("store_error").inc(self.pending)
            log.error("%d decisions could not be recorded at shutdown: %r", self.pending, exc)


class RecordDecisions:
    """Queues each answer's decision in the recorder (an `AnswerObserver`)."""

    def __init__(self, recorder: DecisionRecorder) -> None:
        self.recorder = recorder

    def answered(self, event: AnsweredEvent) -> None:
        self.recorder.record(
            tenant=event.tenant,
            response_id=event.response_id,
            question=event.question,
            embedding=event.embedding,
            difficulty=event.difficulty,
            threshold=event.threshold,
            tier=event.tier,
            route=event.route,
            model=event.model,
        )
