"""The cluster outcome store: PostgreSQL, shared by every router replica.

Any replica can take feedback for an answer another replica gave. Every call runs under
a client-side deadline (`asyncio.wait_for`) and a server-side `statement_timeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from gearshift.router.outcomes.records import Decision, LabelledDecision, Outcome
from gearshift.router.outcomes.sqlite_store import (
    DECISION_COLUMNS,
    N_DECISION_COLUMNS,
    OUTCOME_COLUMNS,
    decision_from,
    decision_row,
    outcome_from,
)

T = TypeVar("T")

# Columns added after the first release: a table written by an older router gets them
# when a router first reaches the database (its rows with the defaults).
ADDED_DECISION_COLUMNS = (
    ("features", "BYTEA NOT NULL DEFAULT ''::bytea"),
    ("features_version", "TEXT NOT NULL DEFAULT ''"),
)

# The transaction lock that serialises schema creation across replicas ("gearshft").
SCHEMA_LOCK_ID = 0x6765617273686674

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gearshift_decisions (
        tenant TEXT NOT NULL, response_id TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        prompt TEXT NOT NULL, prompt_digest TEXT NOT NULL, embedding BYTEA NOT NULL,
        difficulty DOUBLE PRECISION NOT NULL, threshold DOUBLE PRECISION NOT NULL,
        tier TEXT NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL,
        features BYTEA NOT NULL DEFAULT ''::bytea, features_version TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (tenant, response_id))""",
    "CREATE INDEX IF NOT EXISTS gearshift_decisions_created ON gearshift_decisions (created_at)",
    """CREATE TABLE IF NOT EXISTS gearshift_outcomes (
        tenant TEXT NOT NULL, response_id TEXT NOT NULL, source TEXT NOT NULL,
        score DOUBLE PRECISION NOT NULL, other_tier_better BOOLEAN,
        comment TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (tenant, response_id, source))""",
)


class PostgresOutcomeStore:
    """Decisions and outcomes in two PostgreSQL tables (created when missing)."""

    def __init__(self, url: str, timeout_s: float = 2.0, pool_size: int = 4) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._schema_ready = False
        self.pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout_s,
            kwargs={
                "connect_timeout": max(1, round(timeout_s)),
                "options": f"-c statement_timeout={int(timeout_s * 1000)}",
            },
        )

    async def open(self) -> None:
        """Opens the pool without waiting: a down database must not stop the router.

        The tables are created on the first call that reaches the database.
        """
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close(timeout=1.0)

    async def _with_conn(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        async def run() -> T:
            async with self.pool.connection(timeout=self.timeout_s) as conn:
                if not self._schema_ready:
                    # Replicas starting together would race on CREATE ... IF NOT EXISTS
                    # (a UniqueViolation on pg_type): one creates, the others wait here.
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
                    for statement in SCHEMA:
                        await conn.execute(statement)
                    await self._add_missing_columns(conn)
                    await conn.commit()
                    self._schema_ready = True
                return await fn(conn)

        return await asyncio.wait_for(run(), self.timeout_s * 2)

    @staticmethod
    async def _add_missing_columns(conn: AsyncConnection[Any]) -> None:
        """ALTER only when a column is missing: it takes the table's exclusive lock."""
        cur = await conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'gearshift_decisions' AND table_schema = current_schema()"
        )
        present = {row[0] for row in await cur.fetchall()}
        for name, definition in ADDED_DECISION_COLUMNS:
            if name not in present:
                await conn.execute(
                    f"ALTER TABLE gearshift_decisions ADD COLUMN IF NOT EXISTS {name} {definition}"
                )

    async def add_decisions(self, decisions: Sequence[Decision]) -> None:
        rows = [decision_row(d) for d in decisions]

        async def insert(conn: AsyncConnection[Any]) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(
                    f"INSERT INTO gearshift_decisions ({DECISION_COLUMNS}) VALUES "
                    f"({', '.join(['%s'] * N_DECISION_COLUMNS)}) ON CONFLICT DO NOTHING",
                    rows,
                )

        await self._with_conn(insert)

    async def get_decision(self, tenant: str, response_id: str) -> Decision | None:
        async def select(conn: AsyncConnection[Any]) -> Decision | None:
            cur = await conn.execute(
                f"SELECT {DECISION_COLUMNS} FROM gearshift_decisions "
                "WHERE tenant = %s AND response_id = %s",
                (tenant, response_id),
            )
            row = await cur.fetchone()
            return decision_from(row) if row else None

        return await self._with_conn(select)

    async def add_outcome(self, outcome: Outcome) -> bool:
        async def insert(conn: AsyncConnection[Any]) -> bool:
            cur = await conn.execute(
                f"INSERT INTO gearshift_outcomes ({OUTCOME_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    outcome.tenant,
                    outcome.response_id,
                    outcome.source,
                    outcome.score,
                    outcome.other_tier_better,
                    outcome.comment,
                    outcome.created_at,
                ),
            )
            return cur.rowcount == 1

        return await self._with_conn(insert)

    async def labelled(self, since: float = 0.0) -> list[LabelledDecision]:
        columns = ", ".join(f"d.{c.strip()}" for c in DECISION_COLUMNS.split(","))
        outcome_columns = ", ".join(f"o.{c.strip()}" for c in OUTCOME_COLUMNS.split(","))

        async def select(conn: AsyncConnection[Any]) -> list[LabelledDecision]:
            cur = await conn.execute(
                f"SELECT {columns}, {outcome_columns} FROM gearshift_decisions d "
                "JOIN gearshift_outcomes o ON o.tenant = d.tenant "
                "AND o.response_id = d.response_id WHERE d.created_at >= %s "
                "ORDER BY d.created_at, d.response_id, o.source",
                (since,),
            )
            rows = await cur.fetchall()
            n = N_DECISION_COLUMNS
            return [LabelledDecision(decision_from(r[:n]), outcome_from(r[n:])) for r in rows]

        return await self._with_conn(select)

    async def purge(self, unlabelled_before: float, labelled_before: float) -> int:
        async def delete(conn: AsyncConnection[Any]) -> int:
            async with conn.transaction():
                cur = await conn.execute(
                    "DELETE FROM gearshift_decisions d WHERE d.created_at < %s AND NOT EXISTS "
                    "(SELECT 1 FROM gearshift_outcomes o WHERE o.tenant = d.tenant "
                    "AND o.response_id = d.response_id)",
                    (unlabelled_before,),
                )
                gone = cur.rowcount
                await conn.execute(
                    "DELETE FROM gearshift_outcomes o USING gearshift_decisions d "
                    "WHERE d.tenant = o.tenant AND d.response_id = o.response_id "
                    "AND d.created_at < %s",
                    (labelled_before,),
                )
                cur = await conn.execute(
                    "DELETE FROM gearshift_decisions WHERE created_at < %s", (labelled_before,)
                )
                return int(gone + cur.rowcount)

        return await self._with_conn(delete)
