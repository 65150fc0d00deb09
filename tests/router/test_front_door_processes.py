"""The router as a real `gearshift serve router` process: trace ids without tracing, workers.

Tracing is a per-process choice and this test process traces (the session's in-memory
exporter), so the routers here are subprocesses with no OTLP endpoint, in front of a
real proxy process (also not tracing, JSON logs) over a test-controlled upstream, and
the session's cache service (in this process, tracing into the in-memory exporter).

- Without tracing, a caller's W3C `traceparent` is continued on both front doors (the
  trace id comes back and reaches the cache and the proxy); without one, a fresh id is
  minted, returned, and is the one in the proxy's log lines.
- With `workers: 2` both processes accept connections on the gRPC port and on the
  shared OpenAI HTTP port and answer on them; SIGTERM drains both, an HTTP call in
  flight included.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gearshift.proxy.config import local_standin_config
from gearshift.routes.local import LOCAL_LLM_ROUTE, local_default_routes
from gearshift.runtime.errors import retry_delay_s
from gearshift.v1 import common_pb2, router_pb2, router_pb2_grpc
from tests.fixtures.cache import CacheServer
from tests.proxy.fault_server import FaultServer, slow, status

REPO = Path(__file__).resolve().parents[2]
KEY = "front-door-key"
MODEL = "front-door-model"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CONNECTIONS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path
    info: dict[str, int]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _serve(tmp: Path, name: str, *args: str) -> Proc:
    ready, log = tmp / f"{name}.ready", tmp / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "services"), str(REPO / "operator")])
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [
                sys.executable, "-m", "gearshift.cli.main", "serve", name.split("-")[0], *args,
                "--metrics-port", "-1", "--log-format", "json", "--ready-file", str(ready),
            ],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 240
    while not ready.exists():
        assert popen.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{name} did not become ready"
        time.sleep(0.1)
    return Proc(popen, log, json.loads(ready.read_text()))


@dataclass
class Mesh:
    upstream: FaultServer
    proxy: Proc
    proxy_address: str
    tmp: Path

    def start_router(
        self, name: str, cache_address: str = "", workers: int = 1, grace_s: float = 10
    ) -> Proc:
        routes, keys = self.tmp / f"{name}-routes.yaml", self.tmp / f"{name}-keys.yaml"
        routes.write_text(
            yaml.safe_dump_all(
                local_default_routes(self.proxy_address, MODEL, self.proxy_address, MODEL)
            )
        )
        keys.write_text(yaml.safe_dump({KEY: "front-door"}))
        args = [
            "--grpc-port", "0" if workers > 1 else str(_free_port()),
            "--http-port", "0" if workers > 1 else str(_free_port()),
            "--routes-file", str(routes), "--api-keys-file", str(keys),
            "--grace-period-s", str(grace_s), "--health-poll-interval-s", "0.5",
        ]  # fmt: skip
        if cache_address:
            args += ["--cache-address", cache_address]
        if workers > 1:
            args += ["--workers", str(workers)]
        proc = _serve(self.tmp, f"router-{name}", *args)
        if "http_port" not in proc.info:  # one process writes its gRPC port only
            proc.info["http_port"] = int(args[args.index("--http-port") + 1])
        return proc


@pytest.fixture(scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    tmp = tmp_path_factory.mktemp("front-door")
    upstream = FaultServer()
    await upstream.start()
    config = tmp / "proxy.yaml"
    config.write_text(yaml.safe_dump(local_standin_config(upstream.base_url, "stub", MODEL)))
    proxy = await asyncio.to_thread(
        _serve, tmp, "proxy", "--config-file", str(config), "--grpc-port", "0"
    )
    try:
        yield Mesh(upstream, proxy, f"127.0.0.1:{proxy.info['grpc_port']}", tmp)
    finally:
        proxy.stop()
        await upstream.stop()


def _log_trace_ids(log: Path, message: str) -> list[str]:
    """The trace ids of a process's JSON log lines whose message contains `message`."""
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if message in record.get("message", ""):
                out.append(record["trace_id"])
    return out


async def _chat_http(
    http: aiohttp.ClientSession, port: int, headers: dict[str, str], cache: str = "bypass"
) -> aiohttp.ClientResponse:
    """One chat completion; the cache is bypassed unless asked (answers must be fresh)."""
    body = {
        "model": LOCAL_LLM_ROUTE,
        "messages": [{"role": "user", "content": "Say hello."}],
        "temperature": 0,  # a sampled answer would skip the cache
    }
    async with http.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json=body,
        headers={
            "authorization": f"Bearer {KEY}",
            "x-gearshift-cache-policy": cache,
            **headers,
        },
        timeout=aiohttp.ClientTimeout(total=60),
    ) as response:
        assert response.status == 200, await response.text()
        await response.read()
        return response


def _chat_request(question: str) -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        model=LOCAL_LLM_ROUTE,
        messages=[common_pb2.ChatMessage(role="user", content=question)],
        cache_policy=router_pb2.CACHE_POLICY_BYPASS,
    )


async def test_trace_ids_are_continued_or_minted_without_tracing(
    span_exporter: InMemorySpanExporter, cache_server: CacheServer, mesh: Mesh
) -> None:
    router = await asyncio.to_thread(mesh.start_router, "traceless", cache_server.address)
    try:
        sampled = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
        async with aiohttp.ClientSession() as http:
            # HTTP front door, caller's trace continued: back in the header, and the
            # cache (tracing here, honouring the caller's sampled flag) records its
            # Lookup in the caller's trace.
            response = await _chat_http(
                http, router.info["http_port"], {"traceparent": sampled}, cache="no-store"
            )
            assert response.headers["x-gearshift-trace-id"] == CALLER_TRACE
            assert response.headers["x-gearshift-cache"] == "miss"
            cache_spans = [
                s
                for s in span_exporter.get_finished_spans()
                if s.name.endswith("CacheService/Lookup")
                and s.context.trace_id == int(CALLER_TRACE, 16)
            ]
            assert cache_spans, "the cache did not receive the caller's trace"
            assert cache_spans[0].parent is not None
            assert cache_spans[0].parent.span_id != 0x00F067AA0BA902B7  # the router's own span

            # No traceparent: a fresh valid id, the one the proxy logs under. The
            # upstream fails the first attempt, so the proxy logs its retry.
            mesh.upstream.script.append(status(503))
            response = await _chat_http(http, router.info["http_port"], {})
            minted = response.headers["x-gearshift-trace-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", minted) and int(minted, 16) != 0
            assert minted != CALLER_TRACE
            again = await _chat_http(http, router.info["http_port"], {})
            assert again.headers["x-gearshift-trace-id"] not in ("", minted)
            assert minted in _log_trace_ids(mesh.proxy.log, "attempt 1 at")

            # A malformed traceparent is not continued: a fresh id instead.
            bad = await _chat_http(http, router.info["http_port"], {"traceparent": sampled.upper()})
            assert bad.headers["x-gearshift-trace-id"] not in ("", CALLER_TRACE)

        # gRPC front door: the caller's trace id comes back and reaches the proxy.
        unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        mesh.upstream.script.append(status(503))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{router.info['grpc_port']}") as ch:
            reply = await router_pb2_grpc.RouterServiceStub(ch).Chat(
                _chat_request("Say hello over gRPC."),
                metadata=(("authorization", f"Bearer {KEY}"), ("traceparent", unsampled)),
                timeout=60,
            )
            assert reply.trace_id == "0af7651916cd43dd8448eb211c80319c"
            fresh = await router_pb2_grpc.RouterServiceStub(ch).Chat(
                _chat_request("Say hello once more."),
                metadata=(("authorization", f"Bearer {KEY}"),),
                timeout=60,
            )
            assert re.fullmatch(r"[0-9a-f]{32}", fresh.trace_id)
            assert fresh.trace_id != reply.trace_id
        assert reply.trace_id in _log_trace_ids(mesh.proxy.log, "attempt 1 at")
    finally:
        router.stop()


def _connections_by_worker(port: int, pids: list[int]) -> dict[int, int]:
    """For each pid, how many established connections to local `port` it holds."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED
                inodes[fields[9]] = local_port
    owners: dict[int, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and m.group(1) in inodes:
                owners[pid] = owners.get(pid, 0) + 1
    return owners


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


async def test_router_workers_serve_both_ports_and_drain(mesh: Mesh) -> None:
    router = await asyncio.to_thread(mesh.start_router, "workers", "", 2)
    workers = _children(router.popen.pid)
    assert len(workers) == 2 and router.info["workers"] == 2
    grpc_port, http_port = router.info["grpc_port"], router.info["http_port"]
    try:
        # Many connections on each port (the kernel spreads them over the workers),
        # each answering a call; then which worker holds which connection.
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("test.conn", i)])
            for i in range(CONNECTIONS)
        ]
        sessions = [
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            for _ in range(CONNECTIONS)
        ]
        try:
            replies = await asyncio.gather(
                *(
                    router_pb2_grpc.RouterServiceStub(ch).Chat(
                        _chat_request(f"Hello {i}"),
                        metadata=(("authorization", f"Bearer {KEY}"),),
                        timeout=60,
                    )
                    for i, ch in enumerate(channels)
                )
            )
            assert all(r.text == "Hello world" for r in replies)
            answers = await asyncio.gather(*(_chat_http(s, http_port, {}) for s in sessions))
            assert all(a.status == 200 for a in answers)
            grpc_owners = _connections_by_worker(grpc_port, workers)
            http_owners = _connections_by_worker(http_port, workers)
        finally:
            await asyncio.gather(*(ch.close() for ch in channels))
            await asyncio.gather(*(s.close() for s in sessions))
        assert set(grpc_owners) == set(workers), f"gRPC connections by worker: {grpc_owners}"
        assert set(http_owners) == set(workers), f"HTTP connections by worker: {http_owners}"

        # SIGTERM with an HTTP call in flight: it completes, then everything exits.
        arrived = asyncio.Event()

        async def held(srv: FaultServer, request: object, body: dict[str, object]) -> object:
            arrived.set()
            return await slow(1.5)(srv, request, body)  # type: ignore[arg-type]

        mesh.upstream.script.append(held)  # type: ignore[arg-type]
        async with aiohttp.ClientSession() as http:
            call = asyncio.ensure_future(_chat_http(http, http_port, {}))
            await asyncio.wait_for(arrived.wait(), 30)
            router.popen.send_signal(signal.SIGTERM)
            answer = await call
            assert answer.status == 200
        assert await asyncio.to_thread(router.popen.wait, 40) == 0
        assert not [p for p in workers if os.path.exists(f"/proc/{p}")], "a worker outlived"  # noqa: ASYNC240
    finally:
        router.stop()


@pytest.mark.parametrize("in_flight", ["grpc", "http"])
async def test_sigterm_drain_keeps_both_ports_open_and_refuses_new_calls(
    mesh: Mesh, in_flight: str
) -> None:
    """A rollout's SIGTERM: a call in flight on either front door finishes; new calls on
    both are told to retry elsewhere (UNAVAILABLE / 503 + Retry-After), never "connection
    refused", for as long as the drain lasts; then the process exits.

    The upstream holds the call until the refusals have been checked, 3 s after the
    signal: both ports used to close 1-2 s after it while an HTTP call was still running
    (the drain counted gRPC calls only), and new HTTP calls were answered as usual.
    """
    # A drain deadline far beyond what the test needs, so "it stopped because the call was
    # done, not at the deadline" holds on a loaded machine too.
    router = await asyncio.to_thread(mesh.start_router, f"drain-{in_flight}", grace_s=60)
    grpc_address = f"127.0.0.1:{router.info['grpc_port']}"
    http_url = f"http://127.0.0.1:{router.info['http_port']}"
    release, arrived = asyncio.Event(), asyncio.Event()

    async def held(srv: FaultServer, request: object, body: dict[str, object]) -> object:
        arrived.set()
        await release.wait()
        return await slow(0)(srv, request, body)  # type: ignore[arg-type]

    mesh.upstream.script.append(held)  # type: ignore[arg-type]
    auth = (("authorization", f"Bearer {KEY}"),)
    try:
        async with (
            grpc.aio.insecure_channel(grpc_address) as channel,
            aiohttp.ClientSession() as http,
        ):
            call: asyncio.Future[object] = asyncio.ensure_future(
                router_pb2_grpc.RouterServiceStub(channel).Chat(
                    _chat_request("Held over gRPC."), metadata=auth, timeout=60
                )
                if in_flight == "grpc"
                else _chat_http(http, router.info["http_port"], {})
            )
            await asyncio.wait_for(arrived.wait(), 30)
            router.popen.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.sleep(3.0)

            # A new connection on each port, well after the signal: open, and refusing.
            async with grpc.aio.insecure_channel(grpc_address) as fresh:
                health = health_pb2_grpc.HealthStub(fresh)
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await router_pb2_grpc.RouterServiceStub(fresh).Chat(
                        _chat_request("Too late."), metadata=auth, timeout=5
                    )
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "draining" in (refused.value.details() or "")
                trailers = dict(refused.value.trailing_metadata() or ())
                assert int(trailers["grpc-retry-pushback-ms"]) > 0
                assert retry_delay_s(refused.value) is not None
            async with (
                aiohttp.ClientSession() as fresh_http,  # a new connection
                fresh_http.post(
                    f"{http_url}/v1/chat/completions",
                    json={"model": LOCAL_LLM_ROUTE, "messages": [{"role": "user", "content": "x"}]},
                    headers={"authorization": f"Bearer {KEY}"},
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as late,
            ):
                assert late.status == 503, await late.text()
                assert int(late.headers["retry-after"]) >= 1
                assert (await late.json())["error"]["code"] == "draining"
            assert not call.done(), "the held call ended before it was released"

            release.set()
            answer = await call
            if in_flight == "grpc":
                assert answer.text == "Hello world"  # type: ignore[attr-defined]
            else:
                assert answer.status == 200  # type: ignore[attr-defined]
        assert await asyncio.to_thread(router.popen.wait, 20) == 0
        # It stopped because the call was done, not at the 60 s drain deadline.
        assert time.monotonic() - signalled < 45
    finally:
        release.set()
        router.stop()
