"""The embedded backend: a usearch HNSW index per scope, durable in SQLite.

Durability: every entry is committed to SQLite (WAL, `synchronous=FULL`, so the
commit is fsynced) before `put` returns, and only then is the store acknowledged.
The ANN indexes are derived data: on start they are loaded from the last snapshot
(written periodically and on clean shutdown) and reconciled with SQLite, which
adds what was acknowledged after the snapshot and drops what was deleted. A
kill -9 therefore loses nothing that was acknowledged.

Isolation: one index per scope key (tenant + scope + context digest), so a search
can only ever see its own scope's vectors; SQLite queries filter by the key too.

All SQLite and usearch calls run on one worker thread: they are fast, and one
thread keeps the connection and the indexes free of races without locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from usearch.index import Index

from gearshift.cache.backends.base import BackendError
from gearshift.cache.entry import RECORD_FIELDS, Entry, InvalidateFilter
from gearshift.embeddings import DIM

log = logging.getLogger(__name__)

T = TypeVar("T")

_COLUMNS = ", ".join(RECORD_FIELDS) + ", vector"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    scope TEXT NOT NULL,
    context_digest TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    exact_key TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_exact ON entries (exact_key);
CREATE INDEX IF NOT EXISTS entries_tenant ON entries (tenant, scope, context_digest);
CREATE INDEX IF NOT EXISTS entries_created ON entries (created_at);
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires_at);
"""


def _row_to_entry(row: tuple[Any, ...]) -> Entry:
    return Entry.from_record(row, np.frombuffer(row[-1], dtype=np.float32).copy())


def _entry_values(entry: Entry) -> tuple[Any, ...]:
    return (*entry.record(), np.ascontiguousarray(entry.vector, dtype=np.float32).tobytes())


def _new_index() -> Index:
    return Index(ndim=DIM, metric="cos", dtype="f32", connectivity=16, expansion_search=64)


class UsearchBackend:
    """In-process ANN + SQLite journal in `data_dir`."""

    name = "usearch"

    def __init__(self, data_dir: Path | str, snapshot_interval_s: float = 300.0) -> None:
        self.data_dir = Path(data_dir)
        self.snapshot_interval_s = snapshot_interval_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-usearch")
        self._db: sqlite3.Connection | None = None
        self._indexes: dict[str, Index] = {}
        self._dirty = False
        self._snapshot_task: asyncio.Task[None] | None = None

    # -- plumbing ---------------------------------------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            raise BackendError(f"usearch backend: {exc}") from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise BackendError("usearch backend is not open")
        return self._db

    @property
    def _snapshot_dir(self) -> Path:
        return self.data_dir / "index"

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return  # already open (idempotent)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self._run(self._open_sync)
        if self.snapshot_interval_s > 0:
            self._snapshot_task = asyncio.get_running_loop().create_task(self._snapshot_loop())

    def _open_sync(self) -> None:
        db = sqlite3.connect(self.data_dir / "entries.sqlite3", check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        db.commit()
        self._db = db
        started = time.monotonic()
        self._load_indexes()
        log.info(
            "usearch backend loaded %d scopes in %.2fs",
            len(self._indexes),
            time.monotonic() - started,
        )

    def _load_indexes(self) -> None:
        """Snapshot first, then reconcile with SQLite (the source of truth)."""
        manifest_path = self._snapshot_dir / "manifest.json"
        manifest: dict[str, Any] = {}
        if manifest_path.exists():
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                manifest = {}
        live: dict[str, set[int]] = {}
        for scope_key, rowid in self.db.execute("SELECT scope_key, rowid FROM entries"):
            live.setdefault(scope_key, set()).add(int(rowid))
        for scope_key, rowids in live.items():
            index = _new_index()
            file = manifest.get("scopes", {}).get(scope_key)
            if file and (self._snapshot_dir / file).exists():
                try:
                    index.load(str(self._snapshot_dir / file))
                except Exception:
                    log.warning("index snapshot for a scope is unreadable; rebuilding it")
                    index = _new_index()
            have = {int(k) for k in index.keys} if len(index) else set()
            for stale in have - rowids:
                index.remove(stale)
            missing = sorted(rowids - have)
            for start in range(0, len(missing), 5000):
                chunk = missing[start : start + 5000]
                marks = ",".join("?" * len(chunk))
                rows = self.db.execute(
                    f"SELECT rowid, vector FROM entries WHERE rowid IN ({marks})", chunk
                ).fetchall()
                keys = np.array([r[0] for r in rows], dtype=np.uint64)
                vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
                index.add(keys, vectors)
            self._indexes[scope_key] = index

    async def close(self) -> None:
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
            try:
                await self._snapshot_task
            except asyncio.CancelledError:
                pass
            self._snapshot_task = None
        if self._db is not None:
            await self._run(self._snapshot_sync)
            await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.snapshot_interval_s)
            try:
                await self._run(self._snapshot_sync)
            except BackendError:
                log.exception("index snapshot failed")

    def _snapshot_sync(self) -> None:
        """Saves every index and then a manifest naming them (atomically replaced)."""
        if not self._dirty:
            return
        self._snapshot_dir.mkdir(parents=True, exist_ok=True)
        generation = time.time_ns()
        scopes = {}
        for scope_key, index in self._indexes.items():
            if len(index) == 0:
                continue
            file = f"{scope_key}-{generation}.usearch"
            index.save(str(self._snapshot_dir / file))
            scopes[scope_key] = file
        manifest = self._snapshot_dir / "manifest.json"
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps({"generation": generation, "scopes": scopes}))
        tmp.replace(manifest)
        for old in self._snapshot_dir.glob("*.usearch"):
            if old.name not in scopes.values():
                old.unlink(missing_ok=True)
        self._dirty = False

    # -- queries ----------------------------------------------------------------

    async def get_exact(self, scope_key: str, exact_key: str, now: float) -> Entry | None:
        return await self._run(self._get_exact_sync, scope_key, exact_key, now)  # type: ignore[no-any-return]

    def _get_exact_sync(self, scope_key: str, exact_key: str, now: float) -> Entry | None:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE exact_key = ? AND scope_key = ? "
            "AND (expires_at = 0 OR expires_at > ?) ORDER BY created_at DESC LIMIT 1",
            (exact_key, scope_key, now),
        ).fetchone()
        return _row_to_entry(row) if row else None

    async def search(
        self, scope_key: str, vector: npt.NDArray[np.float32], k: int, now: float
    ) -> list[tuple[Entry, float]]:
        return await self._run(self._search_sync, scope_key, vector, k, now)  # type: ignore[no-any-return]

    def _search_sync(
        self, scope_key: str, vector: npt.NDArray[np.float32], k: int, now: float
    ) -> list[tuple[Entry, float]]:
        index = self._indexes.get(scope_key)
        if index is None or len(index) == 0:
            return []
        matches = index.search(vector, k)
        keys = [int(key) for key in matches.keys]
        if not keys:
            return []
        similarity = {key: 1.0 - float(d) for key, d in zip(keys, matches.distances, strict=True)}
        marks = ",".join("?" * len(keys))
        rows = self.db.execute(
            f"SELECT rowid, {_COLUMNS} FROM entries WHERE rowid IN ({marks}) AND scope_key = ? "
            "AND (expires_at = 0 OR expires_at > ?)",
            (*keys, scope_key, now),
        ).fetchall()
        found = [(_row_to_entry(row[1:]), similarity[int(row[0])]) for row in rows]
        found.sort(key=lambda pair: -pair[1])
        return found

    async def put(self, entry: Entry, max_entries: int) -> int:
        return await self._run(self._put_sync, entry, max_entries)  # type: ignore[no-any-return]

    def _put_sync(self, entry: Entry, max_entries: int) -> int:
        with self.db:  # one transaction, committed (and fsynced) on exit
            cursor = self.db.execute(
                f"INSERT INTO entries ({_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _entry_values(entry),
            )
            rowid = int(cursor.lastrowid or 0)
        index = self._indexes.get(entry.scope_key)
        if index is None:
            index = self._indexes[entry.scope_key] = _new_index()
        index.add(rowid, entry.vector)
        self._dirty = True
        return self._evict_sync(max_entries)

    async def put_many(self, entries: list[Entry]) -> None:
        """Bulk load (benchmarks, migrations): one transaction, one batched index add."""
        await self._run(self._put_many_sync, entries)

    def _put_many_sync(self, entries: list[Entry]) -> None:
        with self.db:
            first = self.db.execute("SELECT coalesce(max(rowid), 0) FROM entries").fetchone()[0]
            self.db.executemany(
                f"INSERT INTO entries (rowid, {_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(first + 1 + i, *_entry_values(e)) for i, e in enumerate(entries)],
            )
        by_scope: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            by_scope.setdefault(e.scope_key, []).append(i)
        for scope_key, idx in by_scope.items():
            index = self._indexes.get(scope_key)
            if index is None:
                index = self._indexes[scope_key] = _new_index()
            keys = np.array([first + 1 + i for i in idx], dtype=np.uint64)
            index.add(keys, np.stack([entries[i].vector for i in idx]))
        self._dirty = True

    def _evict_sync(self, max_entries: int) -> int:
        """Oldest-first eviction down to `max_entries`."""
        (total,) = self.db.execute("SELECT count(*) FROM entries").fetchone()
        if int(total) <= max_entries:
            return 0
        # Expired entries go first; they are not counted as evictions.
        self._purge_sync(time.time())
        (total,) = self.db.execute("SELECT count(*) FROM entries").fetchone()
        excess = int(total) - max_entries
        if excess <= 0:
            return 0
        rows = self.db.execute(
            "SELECT rowid, scope_key FROM entries ORDER BY created_at, rowid LIMIT ?", (excess,)
        ).fetchall()
        self._delete_rows(rows)
        return len(rows)

    def _delete_rows(self, rows: list[tuple[int, str]]) -> None:
        if not rows:
            return
        with self.db:
            self.db.executemany("DELETE FROM entries WHERE rowid = ?", [(r[0],) for r in rows])
        for rowid, scope_key in rows:
            index = self._indexes.get(scope_key)
            if index is not None and rowid in index:
                index.remove(rowid)
        self._dirty = True

    async def invalidate(self, what: InvalidateFilter) -> int:
        return await self._run(self._invalidate_sync, what)  # type: ignore[no-any-return]

    def _invalidate_sync(self, what: InvalidateFilter) -> int:
        clauses, params = ["tenant = ?"], [what.tenant]
        if what.scope is not None:
            clauses.append("scope = ?")
            params.append(what.scope)
        if what.context_digest is not None:
            clauses.append("context_digest = ?")
            params.append(what.context_digest)
        if what.id is not None:
            clauses.append("id = ?")
            params.append(what.id)
        sql = "SELECT rowid, scope_key FROM entries WHERE " + " AND ".join(clauses)
        args: list[Any] = list(params)
        if what.created_before is not None:
            sql += " AND created_at < ?"
            args.append(what.created_before)
        rows = self.db.execute(sql, args).fetchall()
        self._delete_rows(rows)
        return len(rows)

    async def count(self, tenant: str | None, now: float) -> int:
        return await self._run(self._count_sync, tenant, now)  # type: ignore[no-any-return]

    def _count_sync(self, tenant: str | None, now: float) -> int:
        sql = "SELECT count(*) FROM entries WHERE (expires_at = 0 OR expires_at > ?)"
        args: list[Any] = [now]
        if tenant:
            sql += " AND tenant = ?"
            args.append(tenant)
        (n,) = self.db.execute(sql, args).fetchone()
        return int(n)

    async def purge_expired(self, now: float) -> int:
        return await self._run(self._purge_sync, now)  # type: ignore[no-any-return]

    def _purge_sync(self, now: float) -> int:
        rows = self.db.execute(
            "SELECT rowid, scope_key FROM entries WHERE expires_at > 0 AND expires_at <= ?",
            (now,),
        ).fetchall()
        self._delete_rows(rows)
        return len(rows)
