"""Latency the LLM proxy adds over calling the same upstream directly.

Three processes on loopback: a stub OpenAI-compatible upstream (aiohttp, canned
completion, so generation time does not drown the overhead; streamed token by token when
asked, as the proxy asks for unary calls too), the proxy
(`gearshift serve proxy`, a real subprocess) and this client. The same request is
sent (a) straight to the stub over HTTP with aiohttp (the fastest common
asyncio client, so the baseline is not flattered) and (b) through the proxy over
gRPC, interleaved in rounds so both see the same machine state. Prints a markdown
table (p50/p99 per path and the difference) and the machine.

    python benchmarks/bench_proxy.py [--requests 1000] [--vllm]

`--vllm` also runs a short side-by-side against the real vLLM server with the small
model (slow: ~60 s start; generation dominates, so only the ratio is meaningful).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import yaml

from gearshift.dev.machine import describe_machine
from gearshift.proxy.config import local_standin_config
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc

STUB_SERVER = r"""
import json, sys
from aiohttp import web
MESSAGE = {"role": "assistant", "content": "Paris is the capital of France."}
USAGE = {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "stub", "usage": USAGE,
  "choices": [{"index": 0, "message": MESSAGE, "finish_reason": "stop"}]})
WORDS = ["Paris", " is", " the", " capital", " of", " France", ".", ""]
def event(delta, finish=None):
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    data = json.dumps({"id": "x", "model": "stub", "choices": [choice]})
    return ("data: " + data + "\n\n").encode()
async def handle(request):
    body = json.loads(await request.read())
    if not body.get("stream"):
        return web.Response(body=BODY, content_type="application/json")
    # Streamed as a real upstream does: a role event, a token an event, finish, usage.
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(event({"role": "assistant"}))
    for word in WORDS:
        await resp.write(event({"content": word}, "stop" if not word else None))
    usage = {"id": "x", "model": "stub", "choices": [], "usage": USAGE}
    await resp.write(("data: " + json.dumps(usage) + "\n\ndata: [DONE]\n\n").encode())
    await resp.write_eof()
    return resp
app = web.Application()
app.router.add_post("/v1/chat/completions", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_until(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up in {timeout:.0f}s")
        time.sleep(0.2)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def measure(call: Callable[[], Awaitable[None]], n: int, concurrency: int) -> list[float]:
    """Latencies in ms of n calls, `concurrency` in flight at a time."""
    out: list[float] = []
    per_worker = max(1, n // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            t0 = time.perf_counter()
            await call()
            out.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
        if len(values) > 1
        else values[0]
    )


async def side_by_side(
    base_url: str,
    upstream_model: str,
    proxy_addr: str,
    served: str,
    n: int,
    concurrencies: list[int],
    max_tokens: int | None = None,
) -> list[tuple[int, list[float], list[float]]]:
    body: dict[str, Any] = {"model": upstream_model, "messages": MESSAGES, "temperature": 0}
    if max_tokens:
        body["max_tokens"] = max_tokens
    payload = json.dumps(body).encode()
    sampling = common_pb2.SamplingParams(temperature=0.0)
    if max_tokens:
        sampling.max_tokens = max_tokens
    req = inference_pb2.GenerateRequest(
        tenant="bench",
        model=served,
        messages=[common_pb2.ChatMessage(role="user", content=MESSAGES[0]["content"])],
        sampling=sampling,
    )
    results = []
    headers = {"Content-Type": "application/json"}
    url = base_url + "/chat/completions"
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http,
        grpc.aio.insecure_channel(proxy_addr) as channel,
    ):
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def direct() -> None:
            async with http.post(url, data=payload, headers=headers) as r:
                r.raise_for_status()
                json.loads(await r.read())

        async def proxied() -> None:
            await stub.Generate(req, timeout=120)

        # warm-up both paths (connections, pools)
        await measure(direct, 64, 8)
        await measure(proxied, 64, 8)
        for c in concurrencies:
            d: list[float] = []
            p: list[float] = []
            rounds = 5
            for _ in range(rounds):  # interleave so drift hits both paths equally
                d += await measure(direct, n // rounds, c)
                p += await measure(proxied, n // rounds, c)
            results.append((c, d, p))
    return results


def table(title: str, results: list[tuple[int, list[float], list[float]]]) -> str:
    lines = [
        f"### {title}",
        "",
        "| concurrency | requests/path | direct p50 ms | proxy p50 ms | added p50 ms "
        "| direct p99 ms | proxy p99 ms | added p99 ms | p50 ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, d, p in results:
        d50, p50, d99, p99 = pct(d, 50), pct(p, 50), pct(d, 99), pct(p, 99)
        lines.append(
            f"| {c} | {len(d)} | {d50:.2f} | {p50:.2f} | **{p50 - d50:.2f}** "
            f"| {d99:.2f} | {p99:.2f} | {p99 - d99:.2f} | {p50 / d50:.2f}x |"
        )
    return "\n".join(lines)


def start_proxy(config: dict[str, Any], tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    cfg = tmp / "proxy.yaml"
    cfg.write_text(yaml.safe_dump(config))
    port = free_port()
    ready = tmp / "proxy.ready"
    proc = spawn(
        [
            sys.executable, "-m", "gearshift.cli.main", "serve", "proxy",
            "--config-file", str(cfg), "--grpc-port", str(port), "--metrics-port", "-1",
            "--log-level", "WARNING", "--ready-file", str(ready),
        ],
        tmp / "proxy.log",
    )  # fmt: skip
    wait_until(ready.exists, "proxy", 60)
    return proc, f"127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="per path and concurrency")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--vllm", action="store_true", help="also measure against vLLM")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        try:
            port = free_port()
            procs.append(spawn([sys.executable, "-c", STUB_SERVER, str(port)], tmp / "stub.log"))
            wait_until(lambda: port_open(port), "stub upstream", 30)
            base = f"http://127.0.0.1:{port}/v1"
            proxy, addr = start_proxy(local_standin_config(base, "stub", "bench-model"), tmp)
            procs.append(proxy)
            stub_results = asyncio.run(
                side_by_side(base, "stub", addr, "bench-model", args.requests, concurrencies)
            )
            out = [table("Stub upstream (canned answer): the proxy's own overhead", stub_results)]
            if args.vllm:
                from gearshift.models.prepare import prepare_default_model

                vport = free_port()
                procs.append(spawn(
                    [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
                     str(prepare_default_model()), "--served-model-name", "standin-large",
                     "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
                     "--host", "127.0.0.1", "--port", str(vport)],
                    tmp / "vllm.log", {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"},
                ))  # fmt: skip
                wait_until(lambda: http_ok(f"http://127.0.0.1:{vport}/health"), "vLLM", 300)
                vbase = f"http://127.0.0.1:{vport}/v1"
                (tmp / "v").mkdir()
                name = "standin-large"
                vproxy, vaddr = start_proxy(local_standin_config(vbase, name, name), tmp / "v")
                procs.append(vproxy)
                v_results = asyncio.run(
                    side_by_side(vbase, name, vaddr, name, 100, [1, 8], max_tokens=8)
                )
                out.append(table("vLLM upstream (small model, 8 tokens)", v_results))
        finally:
            for proc in reversed(procs):
                stop(proc)
    print("\n\n".join(out))
    print(f"\nMachine: {describe_machine()}")
    print("Goal: at most 2 ms added at p50 (concurrency 1).")


if __name__ == "__main__":
    main()
