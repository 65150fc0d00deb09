"""One rate-limit budget for all proxy replicas, kept in sync through PostgreSQL.

Each replica still answers every request from its own in-memory buckets: no database
round trip on the request path, and no request fails because the database is down.
Every `sync_s` a replica adds what it charged since the last sync to its own row and
reads what all other replicas have charged; the increase since its last read is taken
from its buckets. Each replica's buckets so follow the tenant's consumption across
the deployment, and together the replicas stay within one budget, give or take what
the others charged during the last interval.

When the database cannot be reached, the replica keeps limiting on its own (a tenant
may then get up to N times its budget across N replicas, as without a store), keeps its
unreported charges and reports them on the next successful sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

import psycopg

from gearshift.proxy.accounting import RATE_LIMIT_SYNC_ERRORS
from gearshift.proxy.ratelimit import RateLimiter

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS gearshift_rate_usage (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    replica TEXT NOT NULL,
    charged DOUBLE PRECISION NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, kind, replica)
)
"""
REPORT = """
INSERT INTO gearshift_rate_usage (tenant, kind, replica, charged) VALUES (%s, %s, %s, %s)
ON CONFLICT (tenant, kind, replica)
DO UPDATE SET charged = gearshift_rate_usage.charged + EXCLUDED.charged, updated_at = now()
"""
OTHERS = """
SELECT tenant, kind, sum(charged) FROM gearshift_rate_usage
WHERE replica <> %s GROUP BY tenant, kind
"""
# Rows of replicas gone for a day: their totals no longer change, so dropping them
# only makes sums smaller, which `_apply` ignores.
FORGET = "DELETE FROM gearshift_rate_usage WHERE updated_at < now() - interval '1 day'"


def replica_name() -> str:
    """Pod name (the hostname in Kubernetes), process id and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SharedUsage:
    """Exchanges one replica's charges with the others' through a PostgreSQL table."""

    def __init__(
        self, limiter: RateLimiter, url: str, timeout_s: float = 1.0, replica: str = ""
    ) -> None:
        self.limiter = limiter
        self.url = url
        self.timeout_s = timeout_s
        self.replica = replica or replica_name()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._others: dict[tuple[str, str], float] | None = None  # None until the first read

    async def sync(self) -> None:
        """One exchange, within `timeout_s`; raises when the database cannot be used."""
        charged = self.limiter.drain_charges()
        try:
            rows = await asyncio.wait_for(self._exchange(charged), self.timeout_s)
        except BaseException:
            # Reported again next time. A timeout that strikes after the commit reports
            # them twice: the error is on the strict side, never a free pass.
            self.limiter.restore_charges(charged)
            await self._drop_connection()
            raise
        self._apply(rows)

    async def _exchange(
        self, charged: dict[tuple[str, str], float]
    ) -> list[tuple[str, str, float]]:
        conn = await self._connection()
        async with conn.transaction(), conn.cursor() as cur:
            if charged:
                await cur.executemany(
                    REPORT, [(t, k, self.replica, amount) for (t, k), amount in charged.items()]
                )
            await cur.execute(OTHERS, (self.replica,))
            return [(str(t), str(k), float(total)) for t, k, total in await cur.fetchall()]

    def _apply(self, rows: list[tuple[str, str, float]]) -> None:
        first = self._others is None
        others = self._others or {}
        for tenant, kind, total in rows:
            seen = others.get((tenant, kind))
            # At the first read, what the others charged earlier is history, not news.
            increase = 0.0 if first else total - (seen or 0.0)
            if increase > 0:
                self.limiter.charge(tenant, kind, increase)
            others[(tenant, kind)] = total
        self._others = others

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url,
                connect_timeout=max(1, round(self.timeout_s)),
                options=f"-c statement_timeout={int(self.timeout_s * 1000)}",
            )
            await self._conn.set_autocommit(True)
            await self._conn.execute(SCHEMA)
            await self._conn.execute(FORGET)
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                await conn.close()

    async def close(self) -> None:
        """Reports what is left (best effort) and closes the connection."""
        try:
            await self.sync()
        except Exception as exc:  # shutting down either way
            log.warning("final rate-limit sync failed: %s", exc)
        await self._drop_connection()

    async def run(self, interval_s: float) -> None:
        """Syncs every `interval_s` until cancelled; failures are logged once per outage."""
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception as exc:  # the limiter must outlive its store
                RATE_LIMIT_SYNC_ERRORS.inc()
                if not failing:
                    log.warning("rate-limit store unreachable, limiting per replica: %s", exc)
                failing = True
            else:
                if failing:
                    log.info("rate-limit store reachable again")
                failing = False
