"""Durability: an acknowledged store survives kill -9 of the cache process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from gearshift.v1 import cache_pb2, cache_pb2_grpc, common_pb2
from tests.cache.helpers import lookup_request, scope, store_request


def _start(data_dir: Path, ready: Path) -> subprocess.Popen[bytes]:
    ready.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearshift.cli.main",
            "serve",
            "cache",
            "--backend",
            "usearch",
            "--data-dir",
            str(data_dir),
            "--grpc-port",
            "0",
            "--metrics-port",
            "-1",
            "--ready-file",
            str(ready),
            "--log-format",
            "text",
        ],
        env=env,
    )


def _wait_ready(proc: subprocess.Popen[bytes], ready: Path, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.exists():
            return int(json.loads(ready.read_text())["grpc_port"])
        assert proc.poll() is None, "cache process exited before it was ready"
        time.sleep(0.2)
    raise AssertionError("cache process did not become ready")


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


async def test_acknowledged_entries_survive_kill_9() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data, ready = Path(tmp) / "data", Path(tmp) / "ready.json"
        proc = _start(data, ready)
        try:
            port = _wait_ready(proc, ready)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = cache_pb2_grpc.CacheServiceStub(channel)
                where = scope("tenant-durable")
                reply = await stub.Store(
                    store_request(where, "How can I improve my English speaking skills?", "Talk.")
                )
                assert reply.stored
            _kill9(proc)

            proc = _start(data, ready)
            port = _wait_ready(proc, ready)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = cache_pb2_grpc.CacheServiceStub(channel)
                exact = await stub.Lookup(
                    lookup_request(where, "How can I improve my English speaking skills?")
                )
                assert exact.outcome == common_pb2.CACHE_OUTCOME_HIT_EXACT
                assert exact.entry.id == reply.id
                # The ANN index was rebuilt too, not just the journal.
                semantic = await stub.Lookup(
                    lookup_request(where, "How do I improve my English speaking skills?")
                )
                assert semantic.outcome == common_pb2.CACHE_OUTCOME_HIT_SEMANTIC
                assert semantic.entry.id == reply.id
                stats = await stub.Stats(cache_pb2.StatsRequest(tenant="tenant-durable"))
                assert stats.entries == 1
        finally:
            if proc.poll() is None:
                _kill9(proc)
