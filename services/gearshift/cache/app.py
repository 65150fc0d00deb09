"""Entry point of `gearshift serve cache`: `Settings` and `build_app`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import grpc

from gearshift.cache import metrics
from gearshift.cache.backends import Backend, BackendError
from gearshift.cache.servicer import CacheServicer
from gearshift.cache.settings import Settings
from gearshift.cache.verifier import Verifier
from gearshift.embeddings import MicroBatcher, shared_embedder
from gearshift.v1 import cache_pb2, cache_pb2_grpc

log = logging.getLogger(__name__)

__all__ = ["CacheApp", "Settings", "build_app", "make_backend"]


def make_backend(settings: Settings) -> Backend:
    """The backend the settings name (imports only what that backend needs)."""
    if settings.backend == "pgvector":
        if not settings.postgres_url:
            raise ValueError("backend pgvector needs postgres_url (GEARSHIFT_CACHE_POSTGRES_URL)")
        from gearshift.cache.backends.pgvector_backend import PgvectorBackend

        return PgvectorBackend(
            settings.postgres_url, timeout_s=settings.db_timeout_s, pool_size=settings.pool_size
        )
    from gearshift.cache.backends.usearch_backend import UsearchBackend

    return UsearchBackend(
        Path(settings.data_dir).expanduser(), snapshot_interval_s=settings.snapshot_interval_s
    )


class CacheApp:
    """The cache as a `ServiceApp`: loads the embedder and verifier, opens the backend."""

    name = "cache"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backend = make_backend(settings)
        self.verifier = Verifier()
        self.batcher: MicroBatcher | None = None
        self.servicer: CacheServicer | None = None
        self._purge_task: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> list[str]:
        self.servicer = CacheServicer(self.settings, self.backend, None, self.verifier)
        cache_pb2_grpc.add_CacheServiceServicer_to_server(self.servicer, server)
        return [cache_pb2.DESCRIPTOR.services_by_name["CacheService"].full_name]

    async def start(self) -> None:
        embedder = await asyncio.to_thread(shared_embedder)
        self.batcher = MicroBatcher(
            embedder, self.settings.embed_max_batch, self.settings.embed_max_wait_ms
        )
        await self.batcher.embed_vector("warm up")
        if self.servicer is not None:
            self.servicer.batcher = self.batcher
        await self.backend.open()
        self._purge_task = asyncio.get_running_loop().create_task(self._purge_loop())
        log.info(
            "cache ready: backend %s; for max_false_hit_rate %.3f: question verifier >= %.3f, "
            "statement cosine >= %.3f",
            self.backend.name,
            self.settings.max_false_hit_rate,
            self.servicer.decider.threshold("question") if self.servicer else float("nan"),
            self.servicer.decider.threshold("statement") if self.servicer else float("nan"),
        )

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_interval_s)
            try:
                now = time.time()
                await self.backend.purge_expired(now)
                metrics.ENTRIES.labels(self.backend.name).set(await self.backend.count(None, now))
            except BackendError as exc:
                log.warning("expiry purge failed: %s", exc)

    async def stop(self) -> None:
        if self._purge_task is not None:
            self._purge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge_task
        if self.batcher is not None:
            await self.batcher.close()
        await self.backend.close()


def build_app(settings: Settings) -> CacheApp:
    return CacheApp(settings)
