"""Rate limits shared by proxy replicas through a real PostgreSQL (pgserver).

Each "replica" is a RateLimiter with its own SharedUsage on the same database; time
is frozen (no refill) so every number below is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from gearshift.proxy.app import ProxyApp, Settings
from gearshift.proxy.config import ProxyConfig, RateLimitConfig
from gearshift.proxy.ratelimit import RateLimiter
from gearshift.proxy.shared_limits import SharedUsage


class FrozenClock:
    def __call__(self) -> float:
        return 100.0


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A fresh database per test, so replicas of different tests never meet."""
    name = "limits_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_url.replace("/postgres?", f"/{name}?")


def replica(url: str, limits: dict[str, object], name: str) -> SharedUsage:
    limiter = RateLimiter(RateLimitConfig.model_validate({"default": limits}), FrozenClock())
    return SharedUsage(limiter, url, timeout_s=5.0, replica=name)


def admitted(usage: SharedUsage, n: int, tenant: str = "acme", tokens: int = 1) -> int:
    return sum(usage.limiter.admit(tenant, tokens) is None for _ in range(n))


async def test_replicas_share_one_request_budget(database: str) -> None:
    a = replica(database, {"requests_per_minute": 10}, "a")
    b = replica(database, {"requests_per_minute": 10}, "b")
    await a.sync()
    await b.sync()
    assert admitted(a, 6) == 6
    await a.sync()  # reports 6
    await b.sync()  # learns of them
    assert admitted(b, 10) == 4  # alone, b would have admitted all 10
    await b.sync()
    await a.sync()
    refusal = a.limiter.admit("acme", 1)
    assert refusal is not None and refusal.kind == "requests"
    # Other tenants are untouched.
    assert admitted(a, 3, tenant="other") == 3
    await a.close()
    await b.close()


async def test_token_usage_reported_after_the_call_reaches_other_replicas(database: str) -> None:
    a = replica(database, {"tokens_per_minute": 1000}, "a")
    b = replica(database, {"tokens_per_minute": 1000}, "b")
    await a.sync()
    await b.sync()
    assert a.limiter.admit("acme", 100) is None
    a.limiter.settle("acme", 100, 1500)  # the answer was long: a is 500 in debt
    await a.sync()
    await b.sync()
    refusal = b.limiter.admit("acme", 10)
    assert refusal is not None and refusal.kind == "tokens"
    await a.close()
    await b.close()


async def test_history_before_a_replica_started_is_not_charged_to_it(database: str) -> None:
    a = replica(database, {"requests_per_minute": 10}, "a")
    await a.sync()
    assert admitted(a, 8) == 8
    await a.sync()
    late = replica(database, {"requests_per_minute": 10}, "late")
    await late.sync()  # first read: a's 8 are history
    assert admitted(late, 10) == 10
    await a.close()
    await late.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_store_keeps_limiting_per_replica_and_reports_later(
    database: str,
) -> None:
    dead = f"postgresql://gearshift@127.0.0.1:{_closed_port()}/nowhere"
    alone = replica(dead, {"requests_per_minute": 5}, "alone")
    started = time.monotonic()
    with pytest.raises((OSError, psycopg.Error, TimeoutError)):
        await alone.sync()
    assert time.monotonic() - started < 10
    assert admitted(alone, 7) == 5  # still limited, by its own buckets
    # The charges were kept: once the store is back they are reported.
    alone.url = database
    other = replica(database, {"requests_per_minute": 5}, "other")
    await other.sync()
    await alone.sync()
    await other.sync()
    assert admitted(other, 5) == 0
    await alone.close()
    await other.close()


async def test_proxy_app_syncs_in_the_background(database: str) -> None:
    config = ProxyConfig.model_validate(
        {
            "models": [
                {
                    "name": "m",
                    "upstreams": [{"name": "u", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
                }
            ],
            "rate_limits": {"default": {"requests_per_minute": 100}},
        }
    )
    settings = Settings(
        grpc_port=0, metrics_port=-1, rate_limit_postgres_url=database, rate_limit_sync_s=0.05
    )
    app = ProxyApp(settings, config)
    await app.start()
    try:
        assert app.servicer.limiter.admit("acme", 1) is None
        deadline = time.monotonic() + 10
        rows: list[tuple[str, float]] = []
        while time.monotonic() < deadline and not rows:
            await asyncio.sleep(0.05)
            with (
                psycopg.connect(database) as conn,
                contextlib.suppress(psycopg.errors.UndefinedTable),
            ):
                rows = conn.execute(
                    "SELECT kind, charged FROM gearshift_rate_usage WHERE tenant = 'acme'"
                ).fetchall()
        assert ("requests", 1.0) in rows
    finally:
        await app.stop()
