"""The usearch backend's snapshot + journal reconciliation (no model needed)."""

from __future__ import annotations

import tempfile
import time

import numpy as np

from gearshift.cache.backends.usearch_backend import UsearchBackend
from gearshift.cache.entry import InvalidateFilter
from tests.cache.helpers import backend_entry


async def test_snapshot_then_changes_are_reconciled_on_open() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        first = UsearchBackend(tmp, snapshot_interval_s=0)
        await first.open()
        entries = [backend_entry(f"e{i}", vectors[i]) for i in range(4)]
        for e in entries:
            await first.put(e, max_entries=100)
        await first.close()  # writes a snapshot of 4 vectors

        second = UsearchBackend(tmp, snapshot_interval_s=0)
        await second.open()
        assert [e.id for e, _ in await second.search("s1", vectors[2], 1, time.time())] == [
            entries[2].id
        ]
        # Changes after the snapshot, then a "crash" (no close, so no new snapshot).
        await second.invalidate(InvalidateFilter(tenant="t", id=entries[2].id))
        late = backend_entry("e4", vectors[4])
        await second.put(late, max_entries=100)
        second._executor.shutdown(wait=True)

        third = UsearchBackend(tmp, snapshot_interval_s=0)
        await third.open()
        found = await third.search("s1", vectors[2], 5, time.time())
        assert entries[2].id not in {e.id for e, _ in found}
        top = await third.search("s1", vectors[4], 1, time.time())
        assert top[0][0].id == late.id
        assert await third.count(None, time.time()) == 4
        await third.close()
