"""Router test fixtures: a router in process in front of the session's real services.

The SLM server (vLLM engine), the LLM proxy (over a real vLLM OpenAI server) and the
cache come from the shared session fixtures; this file adds the router itself, its
routes and keys files (the in-memory span exporter is tests/fixtures/otlp.py's).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gearshift.router.app import RouterApp, Settings
from gearshift.routes.local import local_default_routes
from gearshift.runtime.server import GrpcServiceHost
from gearshift.v1 import router_pb2_grpc

KEY_A = "test-key-tenant-a"
KEY_B = "test-key-tenant-b"
SLM_ROUTE = "local-slm"
LLM_ROUTE = "local-llm"


def dead_address() -> str:
    """A loopback address where nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


def write_routes(path: Path, routes: list[dict[str, Any]]) -> None:
    """Atomically replaces the routes file (as a ConfigMap update or `gearshift up` would)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(routes))
    tmp.replace(path)


@dataclass
class RunningRouter:
    address: str
    http_base: str
    app: RouterApp
    host: GrpcServiceHost
    routes_file: Path
    channel: grpc.aio.Channel
    stub: router_pb2_grpc.RouterServiceAsyncStub


async def start_router(
    tmp: Path, routes: list[dict[str, Any]], cache_address: str = "", **overrides: Any
) -> RunningRouter:
    routes_file = tmp / "routes.yaml"
    write_routes(routes_file, routes)
    keys_file = tmp / "api-keys.yaml"
    keys_file.write_text(yaml.safe_dump({KEY_A: "tenant-a", KEY_B: "tenant-b"}))
    settings = Settings(
        host="127.0.0.1",
        grpc_port=0,
        metrics_port=-1,
        http_port=0,
        grace_period_s=5.0,
        log_format="text",
        routes_file=str(routes_file),
        api_keys_file=str(keys_file),
        cache_address=cache_address,
        health_poll_interval_s=0.5,
        **{"outcomes_dir": str(tmp / "outcomes"), **overrides},
    )
    app = RouterApp(settings)
    host = GrpcServiceHost(app, settings)
    port = await host.start()
    assert app.http is not None and app.http.port
    # The test client is a plain channel: the router's server span is the trace's root.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return RunningRouter(
        address=f"127.0.0.1:{port}",
        http_base=f"http://127.0.0.1:{app.http.port}/v1",
        app=app,
        host=host,
        routes_file=routes_file,
        channel=channel,
        stub=router_pb2_grpc.RouterServiceStub(channel),
    )


async def stop_router(router: RunningRouter) -> None:
    await router.channel.close()
    await router.host.stop(0)


@pytest.fixture(scope="session")
async def router(
    span_exporter: InMemorySpanExporter,
    slm_server: Any,
    proxy_server: Any,
    cache_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[RunningRouter]:
    """The router over the real SLM server, the LLM proxy and the cache."""
    routes = local_default_routes(
        slm_server.address, slm_server.served_model, proxy_server.address, proxy_server.served_model
    )
    running = await start_router(
        tmp_path_factory.mktemp("router"), routes, cache_address=cache_server.address
    )
    try:
        yield running
    finally:
        await stop_router(running)
