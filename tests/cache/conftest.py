"""Cache services for the suite: one per backend, reused by every test (unique tenants)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from gearshift.cache.app import CacheApp, Settings, build_app
from gearshift.runtime.server import GrpcServiceHost
from gearshift.v1 import cache_pb2_grpc


@dataclass
class RunningCache:
    settings: Settings
    app: CacheApp
    host: GrpcServiceHost
    channel: grpc.aio.Channel
    stub: cache_pb2_grpc.CacheServiceStub

    @property
    def backend(self) -> str:
        return self.settings.backend


async def start_cache(settings: Settings) -> RunningCache:
    app = build_app(settings)
    host = GrpcServiceHost(app, settings)
    await host.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{host.port}")
    return RunningCache(settings, app, host, channel, cache_pb2_grpc.CacheServiceStub(channel))


async def stop_cache(cache: RunningCache) -> None:
    await cache.channel.close()
    await cache.host.stop(0)


def settings_for(backend: str, data_dir: str, postgres_url: str, **extra: object) -> Settings:
    return Settings(
        grpc_port=0,
        metrics_port=-1,
        backend=backend,  # type: ignore[arg-type]
        data_dir=data_dir,
        postgres_url=postgres_url,
        snapshot_interval_s=0,
        backend_retry_s=0,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session", params=["usearch", "pgvector"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture(scope="session")
async def cache(backend_name: str, request: pytest.FixtureRequest) -> AsyncIterator[RunningCache]:
    """A cache service on `backend_name` (a real pgserver PostgreSQL for pgvector)."""
    url = request.getfixturevalue("postgres_url") if backend_name == "pgvector" else ""
    with tempfile.TemporaryDirectory(prefix="gearshift-cache-test-") as tmp:
        running = await start_cache(settings_for(backend_name, tmp, url))
        try:
            yield running
        finally:
            await stop_cache(running)


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test, so tests sharing a cache never see each other's entries."""
    return "t-" + uuid.uuid4().hex[:12]
