"""The `helm test` pod's check, run for real against a gRPC health server and an HTTP API.

The rendered script is executed unchanged except for the router's address, which points
at servers this test starts on loopback: it must pass when the router is SERVING and its
HTTP API answers (even 401), and fail when the router is not serving yet.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.helm.chart import by_kind, component_name, objects_of


class _Unauthorized(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.end_headers()
        self.wfile.write(b'{"error": "missing API key"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(0)


def _script(grpc_port: int, http_port: int) -> str:
    (pod,) = by_kind(objects_of("default"), "Pod")
    (container,) = pod["spec"]["containers"]
    script: str = container["args"][0]
    router = component_name("router")
    assert f"{router}:50051" in script and f"{router}:8080" in script
    return script.replace(f"{router}:50051", f"127.0.0.1:{grpc_port}").replace(
        f"{router}:8080", f"127.0.0.1:{http_port}"
    )


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


def test_passes_when_the_router_serves(
    health_server: tuple[int, health.HealthServicer], http_port: int
) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = _run(_script(port, http_port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SERVING" in result.stdout and "401" in result.stdout


def test_fails_while_the_router_is_not_serving(
    health_server: tuple[int, health.HealthServicer], http_port: int
) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = _run(_script(port, http_port))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT_SERVING" in result.stdout
