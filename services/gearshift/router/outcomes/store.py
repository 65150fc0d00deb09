"""Where decisions and outcomes live: SQLite (embedded default) or PostgreSQL (cluster).

Both stores keep the same two tables and the same rules: a decision is keyed by
(tenant, response_id), so another tenant's id is simply not found; an outcome by
(tenant, response_id, source), so a second user feedback for one answer is refused
instead of overwriting the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from gearshift.router.outcomes.records import Decision, LabelledDecision, Outcome

SQLITE_FILE = "outcomes.sqlite3"


class OutcomeStore(Protocol):
    """Durable decisions and outcomes, per tenant."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add_decisions(self, decisions: Sequence[Decision]) -> None:
        """Inserts decisions; an existing (tenant, response_id) is kept unchanged."""

    async def get_decision(self, tenant: str, response_id: str) -> Decision | None: ...

    async def add_outcome(self, outcome: Outcome) -> bool:
        """Stores an outcome; False when this source already gave one for the answer."""

    async def labelled(self, since: float = 0.0) -> list[LabelledDecision]:
        """Every decision with its outcomes (one row per outcome), oldest first."""

    async def purge(self, unlabelled_before: float, labelled_before: float) -> int:
        """Deletes decisions without outcomes older than the first cutoff and labelled
        ones (with their outcomes) older than the second; returns how many went."""


def open_store(target: str, timeout_s: float = 2.0) -> OutcomeStore:
    """A PostgreSQL store for a `postgresql://` URL, else SQLite at the path.

    A directory (or a path without a suffix) holds `outcomes.sqlite3`.
    """
    if target.startswith(("postgresql://", "postgres://")):
        from gearshift.router.outcomes.postgres_store import PostgresOutcomeStore

        return PostgresOutcomeStore(target, timeout_s=timeout_s)
    from gearshift.router.outcomes.sqlite_store import SqliteOutcomeStore

    path = Path(target).expanduser()
    if path.is_dir() or not path.suffix:
        path = path / SQLITE_FILE
    return SqliteOutcomeStore(path, timeout_s=timeout_s)
