"""Scorer weights swapped in at run time, when the weights file changes.

`gearshift scorer train --outcomes` writes new weights (atomically: a temporary file,
then a rename); in a cluster the file is a mounted ConfigMap, whose updates are renames
too. The router polls the file's (inode, mtime, size) and loads a changed file in a
worker thread; a file that does not load or does not score is refused and the running
scorer kept. The swap is one attribute assignment on the event loop: a request scores
and takes its threshold in one synchronous step, so it uses either the old scorer or
the new one, never a mix, and requests already scored finish as decided.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gearshift.router import metrics
from gearshift.router.scorer.protocol import DifficultyScorer, PackageScorer
from gearshift.runtime.aiotasks import cancel_and_wait

log = logging.getLogger(__name__)


def load_scorer_file(path: str | Path) -> DifficultyScorer:
    """A scorer from a weights file, checked by scoring one query (raises when unusable)."""
    from gearshift.router.scorer import Scorer

    scorer = PackageScorer(Scorer.load(Path(path).expanduser()))
    probe = np.zeros(384, dtype=np.float32)
    probe[0] = 1.0
    value = scorer.score(probe.tolist(), "probe")
    threshold = scorer.threshold_for_share(0.3)
    if not (0.0 <= value <= 1.0) or not np.isfinite(threshold):
        raise ValueError(f"{path}: the scorer does not produce valid scores")
    return scorer


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class ReloadingScorer:
    """A DifficultyScorer that delegates to the newest valid weights file."""

    def __init__(self, initial: DifficultyScorer, path: str = "", interval_s: float = 2.0) -> None:
        self.current = initial
        self.path = Path(path).expanduser() if path else None
        self.interval_s = interval_s
        self._stamp = _file_stamp(self.path) if self.path else None
        self._task: asyncio.Task[None] | None = None

    def score(self, embedding: Sequence[float], text: str) -> float:
        return self.current.score(embedding, text)

    def threshold_for_share(self, share: float) -> float:
        return self.current.threshold_for_share(share)

    async def reload_if_changed(self) -> bool:
        """Loads the file when it changed; True when a new scorer was swapped in."""
        if self.path is None:
            return False
        stamp = _file_stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return False
        try:
            loaded = await asyncio.to_thread(load_scorer_file, self.path)
        except Exception as exc:
            self._stamp = stamp  # do not retry the same broken file every tick
            metrics.SCORER_RELOADS.labels("invalid").inc()
            log.error("scorer weights %s refused, keeping the running scorer: %s", self.path, exc)
            return False
        self._stamp = stamp
        self.current = loaded
        metrics.SCORER_RELOADS.labels("loaded").inc()
        log.info("scorer weights reloaded from %s", self.path)
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.reload_if_changed()
            except Exception:
                log.exception("checking %s failed", self.path)

    def start(self) -> None:
        if self.path is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="router-scorer-reload")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
