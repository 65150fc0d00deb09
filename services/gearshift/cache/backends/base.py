"""The storage contract both backends implement.

Tenant, scope and context digest are hard filters: `search` and `get_exact` only
ever return entries whose `scope_key` equals the caller's.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from gearshift.cache.entry import Entry, InvalidateFilter


class BackendError(RuntimeError):
    """The backend could not answer (down, timed out); the cache fails soft."""


class Backend(Protocol):
    name: str

    async def open(self) -> None:
        """Connects / loads; must not fail when a remote backend is down."""
        ...

    async def close(self) -> None: ...

    async def get_exact(self, scope_key: str, exact_key: str, now: float) -> Entry | None:
        """The newest live entry with this exact key."""
        ...

    async def search(
        self, scope_key: str, vector: npt.NDArray[np.float32], k: int, now: float
    ) -> list[tuple[Entry, float]]:
        """Up to `k` live entries of this scope, most similar first, with cosine similarity."""
        ...

    async def put(self, entry: Entry, max_entries: int) -> int:
        """Stores durably (returns only once acknowledged); evicts the oldest entries beyond
        `max_entries` and returns how many were evicted."""
        ...

    async def invalidate(self, what: InvalidateFilter) -> int:
        """Removes matching entries; returns how many."""
        ...

    async def count(self, tenant: str | None, now: float) -> int:
        """Live entries (of one tenant, or all)."""
        ...

    async def purge_expired(self, now: float) -> int:
        """Deletes expired entries; returns how many."""
        ...
