"""One PostgreSQL + pgvector connection pool with a deadline on every call.

The cache and the retriever keep their data in PostgreSQL the same way: the pgvector type
registered on every connection, their schema created once (under an advisory lock, so
replicas starting together do not race), and every call bounded, so a dead database
means a quick error of the caller's kind (its service answers UNAVAILABLE or a miss),
never a hung request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)
T = TypeVar("T")

# DDL may take longer than a query; getting a connection is still bounded by the timeout.
SCHEMA_TIMEOUT_S = 30.0


class PgvectorPool:
    """A psycopg pool for one schema; `run` calls a function with a connection, bounded.

    `error` is the caller's backend error type: every failure (no connection in time, a
    statement timeout, a dead server) is raised as it, with what went wrong.
    """

    def __init__(
        self,
        url: str,
        schema: str,
        schema_lock_id: int,
        error: type[Exception],
        timeout_s: float = 1.0,
        pool_size: int = 8,
        ef_search: int = 100,
    ) -> None:
        self.schema = schema
        self.schema_lock_id = schema_lock_id
        self.error = error
        self.timeout_s = timeout_s
        self.ef_search = ef_search
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self.pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout_s,
            kwargs={
                "connect_timeout": max(1, round(timeout_s)),
                "options": f"-c statement_timeout={int(timeout_s * 1000)}",
                "autocommit": True,
            },
            configure=self._configure,
            reconnect_timeout=0,
        )

    async def _configure(self, conn: AsyncConnection[Any]) -> None:
        cur = await conn.execute("SELECT 1 FROM pg_type WHERE typname = 'vector'")
        if await cur.fetchone() is None:
            # A fresh database: the type must exist before the adapter can be registered.
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.errors.UniqueViolation:
                pass  # another connection created it at the same moment
        await register_vector_async(conn)
        await conn.execute(f"SET hnsw.ef_search = {int(self.ef_search)}")

    async def open(self) -> None:
        """Opens the pool without waiting: a down database must not stop the service."""
        await self.pool.open(wait=False)
        try:
            await self._ensure_schema()
        except self.error:
            log.warning("pgvector backend not reachable at start; will retry on use")

    async def close(self) -> None:
        await self.pool.close(timeout=1.0)

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        async with self._schema_lock:
            if self._schema_ready:
                return

            async def create(conn: AsyncConnection[Any]) -> None:
                await conn.execute(f"SELECT pg_advisory_lock({self.schema_lock_id})")
                try:
                    await conn.execute(self.schema)  # type: ignore[arg-type]
                finally:
                    await conn.execute(f"SELECT pg_advisory_unlock({self.schema_lock_id})")

            await self.run(create, max(self.timeout_s, SCHEMA_TIMEOUT_S), setup=True)
            self._schema_ready = True

    async def run(
        self,
        fn: Callable[[AsyncConnection[Any]], Awaitable[T]],
        timeout_s: float | None = None,
        setup: bool = False,
    ) -> T:
        """`fn(conn)` within `timeout_s` (default: the pool's), once the schema exists."""
        if not setup:
            await self._ensure_schema()
        timeout = timeout_s or self.timeout_s

        async def call() -> T:
            # Getting a connection is bounded by the normal timeout even for the schema
            # set-up, so a dead database fails fast; only the DDL itself may take longer.
            async with self.pool.connection(timeout=self.timeout_s) as conn:
                if not setup:
                    return await fn(conn)
                await conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
                try:
                    return await fn(conn)
                finally:  # the connection goes back to the pool with the normal bound
                    await conn.execute(f"SET statement_timeout = {int(self.timeout_s * 1000)}")

        try:
            return await asyncio.wait_for(call(), timeout)
        except self.error:
            raise
        except (TimeoutError, Exception) as exc:
            raise self.error(f"pgvector backend: {type(exc).__name__}: {exc}") from exc
