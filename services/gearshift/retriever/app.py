"""Entry point of `gearshift serve retriever`: `Settings` and `build_app`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc

from gearshift.embeddings import MicroBatcher, shared_embedder
from gearshift.retriever.access import Access
from gearshift.retriever.backends import Backend
from gearshift.retriever.core import Retriever
from gearshift.retriever.servicer import RetrieverServicer
from gearshift.retriever.settings import Settings
from gearshift.runtime.api_keys import KeyTable
from gearshift.v1 import retriever_pb2, retriever_pb2_grpc

log = logging.getLogger(__name__)

__all__ = ["RetrieverApp", "Settings", "build_app", "make_backend"]


def make_backend(settings: Settings) -> Backend:
    """The backend the settings name (imports only what that backend needs)."""
    if settings.backend == "pgvector":
        if not settings.postgres_url:
            raise ValueError(
                "backend pgvector needs postgres_url (GEARSHIFT_RETRIEVER_POSTGRES_URL)"
            )
        from gearshift.retriever.backends.pgvector_backend import PgvectorBackend

        return PgvectorBackend(
            settings.postgres_url,
            timeout_s=settings.db_timeout_s,
            pool_size=settings.pool_size,
            keyword_rank_limit=settings.keyword_rank_limit,
        )
    from gearshift.retriever.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(Path(settings.data_dir).expanduser())


class RetrieverApp:
    """The retriever as a `ServiceApp`: loads the embedder, opens the backend."""

    name = "retriever"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backend = make_backend(settings)
        self.retriever = Retriever(settings, self.backend)
        self.access = Access(KeyTable(settings.api_keys_file) if settings.api_keys_file else None)
        self.batcher: MicroBatcher | None = None

    def register(self, server: grpc.aio.Server) -> list[str]:
        retriever_pb2_grpc.add_RetrieverServiceServicer_to_server(
            RetrieverServicer(self.retriever, self.access), server
        )
        return [retriever_pb2.DESCRIPTOR.services_by_name["RetrieverService"].full_name]

    async def start(self) -> None:
        await self.backend.open()
        embedder = await asyncio.to_thread(shared_embedder)
        self.batcher = MicroBatcher(
            embedder, self.settings.embed_max_batch, self.settings.embed_max_wait_ms
        )
        await self.batcher.embed_vector("warm up")
        self.retriever.embedder = embedder
        self.retriever.batcher = self.batcher
        log.info("retriever ready: backend %s", self.backend.name)

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        await self.backend.close()


def build_app(settings: Settings) -> RetrieverApp:
    return RetrieverApp(settings)
