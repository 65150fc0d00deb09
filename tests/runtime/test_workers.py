"""`workers`: several processes of one service on one port, drained together on SIGTERM.

The real `gearshift serve proxy --workers 2` in front of a real HTTP upstream: calls on
separate connections are answered, the parent's /metrics sums both workers, and a call
in flight when SIGTERM arrives still completes before every process exits cleanly.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from aiohttp import web

from gearshift.cache.settings import Settings as CacheSettings
from gearshift.proxy.config import local_standin_config
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from tests.proxy.fault_server import FaultServer, slow

CALLS = 16


def _metric(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        m = re.match(rf"{name}{{(.*)}} (\S+)$", line)
        if m:
            found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if all(found.get(k) == v for k, v in labels.items()):
                out.append((found, float(m.group(2))))
    return out


def _start_workers(tmp_path: Path, base_url: str) -> tuple[subprocess.Popen[bytes], Path]:
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump(local_standin_config(base_url, "stub", "m")))
    ready = tmp_path / "ready.json"
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [
                sys.executable, "-m", "gearshift.cli.main", "serve", "proxy",
                "--config-file", str(config), "--grpc-port", "0", "--metrics-port", "0",
                "--workers", "2", "--grace-period-s", "10", "--ready-file", str(ready),
            ],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 180
    while not ready.exists():
        assert popen.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "workers did not become ready"
        time.sleep(0.1)
    return popen, ready


def _alive(pids: set[str]) -> list[str]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


async def test_two_workers_share_the_port_and_drain_together(tmp_path: Path) -> None:
    upstream = FaultServer()
    await upstream.start()
    popen, ready = await asyncio.to_thread(_start_workers, tmp_path, upstream.base_url)
    try:
        info = json.loads(ready.read_text())
        assert info["workers"] == 2 and info["grpc_port"] > 0
        address = f"127.0.0.1:{info['grpc_port']}"
        request = inference_pb2.GenerateRequest(
            model="m", messages=[common_pb2.ChatMessage(role="user", content="hi")]
        )
        for i in range(CALLS):  # one connection each: the kernel spreads them
            async with grpc.aio.insecure_channel(address, options=[("test.conn", i)]) as ch:
                reply = await inference_pb2_grpc.InferenceServiceStub(ch).Generate(
                    request, timeout=30
                )
                assert reply.text == "Hello world"

        url = f"http://127.0.0.1:{info['metrics_port']}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        metrics = text.decode()
        handled = _metric(
            metrics, "gearshift_grpc_server_handled_total", method="Generate", code="OK"
        )
        assert sum(v for _, v in handled) == CALLS, handled
        pids = {labels["pid"] for labels, _ in _metric(metrics, "gearshift_proxy_breaker_state")}
        assert len(pids) == 2, f"expected both workers in /metrics, got pids {pids}"

        # A call in flight at SIGTERM finishes; then every process exits cleanly.
        arrived = asyncio.Event()

        async def held(srv: FaultServer, request: web.Request, body: dict[str, Any]) -> Any:
            arrived.set()
            return await slow(1.5)(srv, request, body)

        upstream.script.append(held)
        async with grpc.aio.insecure_channel(address) as ch:
            call = asyncio.ensure_future(
                inference_pb2_grpc.InferenceServiceStub(ch).Generate(request, timeout=30)
            )
            await asyncio.wait_for(arrived.wait(), 20)
            popen.send_signal(signal.SIGTERM)
            reply = await call
            assert reply.text == "Hello world"
        assert await asyncio.to_thread(popen.wait, 40) == 0
        assert not _alive(pids), "a worker outlived the parent"
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        await upstream.stop()


def test_workers_need_a_shared_cache_backend() -> None:
    with pytest.raises(ValueError, match="workers > 1 needs backend pgvector"):
        CacheSettings(workers=2, backend="usearch")
    assert CacheSettings(workers=2, backend="pgvector", postgres_url="postgresql://x").workers == 2
