"""The embedded outcome store: one SQLite file (WAL), used from a worker thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gearshift.router.outcomes.records import Decision, LabelledDecision, Outcome

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS decisions (
        tenant TEXT NOT NULL, response_id TEXT NOT NULL, created_at REAL NOT NULL,
        prompt TEXT NOT NULL, prompt_digest TEXT NOT NULL, embedding BLOB NOT NULL,
        difficulty REAL NOT NULL, threshold REAL NOT NULL, tier TEXT NOT NULL,
        route TEXT NOT NULL, model TEXT NOT NULL,
        features BLOB NOT NULL DEFAULT x'', features_version TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (tenant, response_id))""",
    "CREATE INDEX IF NOT EXISTS decisions_created ON decisions (created_at)",
    """CREATE TABLE IF NOT EXISTS outcomes (
        tenant TEXT NOT NULL, response_id TEXT NOT NULL, source TEXT NOT NULL,
        score REAL NOT NULL, other_tier_better INTEGER, comment TEXT NOT NULL,
        created_at REAL NOT NULL, PRIMARY KEY (tenant, response_id, source))""",
)
DECISION_COLUMNS = (
    "tenant, response_id, created_at, prompt, prompt_digest, embedding, difficulty, "
    "threshold, tier, route, model, features, features_version"
)
N_DECISION_COLUMNS = 13
# Columns added after the first release: (name, SQLite type and default). A store
# written by an older router gets them on open, its rows with the defaults.
ADDED_DECISION_COLUMNS = (
    ("features", "BLOB NOT NULL DEFAULT x''"),
    ("features_version", "TEXT NOT NULL DEFAULT ''"),
)
OUTCOME_COLUMNS = "tenant, response_id, source, score, other_tier_better, comment, created_at"


def decision_row(d: Decision) -> tuple[Any, ...]:
    return (
        d.tenant,
        d.response_id,
        d.created_at,
        d.prompt,
        d.prompt_digest,
        d.embedding,
        d.difficulty,
        d.threshold,
        d.tier,
        d.route,
        d.model,
        d.features,
        d.features_version,
    )


def decision_from(row: Sequence[Any]) -> Decision:
    return Decision(
        tenant=row[0],
        response_id=row[1],
        created_at=float(row[2]),
        prompt=row[3],
        prompt_digest=row[4],
        embedding=bytes(row[5]),
        difficulty=float(row[6]),
        threshold=float(row[7]),
        tier=row[8],
        route=row[9],
        model=row[10],
        features=bytes(row[11]),
        features_version=row[12],
    )


def outcome_from(row: Sequence[Any]) -> Outcome:
    return Outcome(
        tenant=row[0],
        response_id=row[1],
        source=row[2],
        score=float(row[3]),
        other_tier_better=None if row[4] is None else bool(row[4]),
        comment=row[5],
        created_at=float(row[6]),
    )


class SqliteOutcomeStore:
    """Decisions and outcomes in one SQLite file; every call runs in a thread."""

    def __init__(self, path: Path | str, timeout_s: float = 2.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.timeout_s, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for statement in SCHEMA:
            db.execute(statement)
        present = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
        for name, definition in ADDED_DECISION_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE decisions ADD COLUMN {name} {definition}")
        db.commit()
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the outcome store is not open")
        return self._db

    async def _run(self, fn: Any, *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                return fn(*args)

        return await asyncio.wait_for(asyncio.to_thread(locked), self.timeout_s * 2)

    async def add_decisions(self, decisions: Sequence[Decision]) -> None:
        rows = [decision_row(d) for d in decisions]

        def insert() -> None:
            db = self._conn()
            with db:
                db.executemany(
                    f"INSERT OR IGNORE INTO decisions ({DECISION_COLUMNS}) "
                    f"VALUES ({', '.join('?' * N_DECISION_COLUMNS)})",
                    rows,
                )

        await self._run(insert)

    async def get_decision(self, tenant: str, response_id: str) -> Decision | None:
        def select() -> Decision | None:
            row = (
                self._conn()
                .execute(
                    f"SELECT {DECISION_COLUMNS} FROM decisions "
                    "WHERE tenant = ? AND response_id = ?",
                    (tenant, response_id),
                )
                .fetchone()
            )
            return decision_from(row) if row else None

        result: Decision | None = await self._run(select)
        return result

    async def add_outcome(self, outcome: Outcome) -> bool:
        def insert() -> bool:
            db = self._conn()
            with db:
                cursor = db.execute(
                    f"INSERT OR IGNORE INTO outcomes ({OUTCOME_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        outcome.tenant,
                        outcome.response_id,
                        outcome.source,
                        outcome.score,
                        None
                        if outcome.other_tier_better is None
                        else int(outcome.other_tier_better),
                        outcome.comment,
                        outcome.created_at,
                    ),
                )
            return cursor.rowcount == 1

        inserted: bool = await self._run(insert)
        return inserted

    async def labelled(self, since: float = 0.0) -> list[LabelledDecision]:
        columns = ", ".join(f"d.{c.strip()}" for c in DECISION_COLUMNS.split(","))
        outcome_columns = ", ".join(f"o.{c.strip()}" for c in OUTCOME_COLUMNS.split(","))

        def select() -> list[LabelledDecision]:
            rows = (
                self._conn()
                .execute(
                    f"SELECT {columns}, {outcome_columns} FROM decisions d JOIN outcomes o "
                    "ON o.tenant = d.tenant AND o.response_id = d.response_id "
                    "WHERE d.created_at >= ? ORDER BY d.created_at, d.response_id, o.source",
                    (since,),
                )
                .fetchall()
            )
            n = N_DECISION_COLUMNS
            return [LabelledDecision(decision_from(r[:n]), outcome_from(r[n:])) for r in rows]

        result: list[LabelledDecision] = await self._run(select)
        return result

    async def purge(self, unlabelled_before: float, labelled_before: float) -> int:
        def delete() -> int:
            db = self._conn()
            with db:
                gone = db.execute(
                    "DELETE FROM decisions WHERE created_at < ? AND NOT EXISTS (SELECT 1 FROM "
                    "outcomes o WHERE o.tenant = decisions.tenant "
                    "AND o.response_id = decisions.response_id)",
                    (unlabelled_before,),
                ).rowcount
                db.execute(
                    "DELETE FROM outcomes WHERE EXISTS (SELECT 1 FROM decisions d WHERE "
                    "d.tenant = outcomes.tenant AND d.response_id = outcomes.response_id "
                    "AND d.created_at < ?)",
                    (labelled_before,),
                )
                gone += db.execute(
                    "DELETE FROM decisions WHERE created_at < ?", (labelled_before,)
                ).rowcount
            return int(gone)

        result: int = await self._run(delete)
        return result
