"""The front door's cost per request: latency added, throughput and CPU per process.

One interleaved run over loopback, every service a real subprocess, the same aiohttp stub
upstream (canned completion) behind every path:

- direct: this client -> stub over HTTP (aiohttp), the floor;
- proxy: this client -> `gearshift serve proxy` (gRPC) -> stub;
- router: this client -> `gearshift serve router` (OpenAI HTTP, pinned model, no cache)
  -> proxy (gRPC) -> stub;
- LiteLLM proxy (1 worker) -> stub, when the `litellm` command is installed.

Each path runs in up to seven set-ups: this tree with tracing off; this tree exporting
traces at a 10% sample ratio to a local OTLP receiver (over HTTP/protobuf, and over gRPC
unless `--no-grpc-export`); a baseline tree (`--baseline-tree`, e.g. a checkout of main)
as it runs today, and optionally a second one (`--issue-baseline-tree`, main when the
issue was filed, which its 2x goal refers to); and the proxy with `workers` 1 and 2 (not
pinned: both cores). With `--pin` (default on 2+ cores) every single-worker service is
pinned with taskset, routers to one core and proxies to the other, as "one core per
service". Rounds interleave every set-up so the shared machine's drift hits all alike;
the table reports medians over rounds of: added p50 at 1 and 32 in flight (vs direct in
the same round), req/s at 32, and CPU ms per request of each service process (utime +
stime from /proc, summed over worker processes). Then the goals, as ratios of this run.

    python benchmarks/bench_frontdoor.py [--rounds 3] [--requests 600]
        [--baseline-tree /tmp/frontdoor-base] [--issue-baseline-tree /tmp/frontdoor-issue]
        [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import yaml
from bench_proxy import STUB_SERVER, free_port, pct, port_open, spawn, stop, wait_until

from gearshift.dev.machine import describe_machine
from gearshift.routes.local import LOCAL_LLM_ROUTE
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc

HERE = Path(__file__).resolve().parents[1]
KEY = "bench-key"
MODEL = "bench-model"
ROUTE = LOCAL_LLM_ROUTE
QUESTION = "What is the capital of France?"
TICKS = os.sysconf("SC_CLK_TCK")

OTLP_RECEIVER = r"""
import asyncio, sys, grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    spans = 0
    async def Export(self, request, context):
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                Receiver.spans += len(ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()
async def main():
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""

OTLP_HTTP_RECEIVER = r"""
import sys
from aiohttp import web
async def traces(request):
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")
app = web.Application()
app.router.add_post("/v1/traces", traces)
app.router.add_post("/v1/metrics", traces)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


# --- processes ---------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """The process and every process below it (worker processes of a `workers` parent)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children[int(fields[1])].append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process tree, from /proc (clock ticks)."""
    total = 0
    for p in descendants(pid):
        if (fields := _stat(p)) is not None:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    address: str


@dataclass
class Setup:
    """One way of running the services: a tree, tracing, workers, pinning."""

    label: str
    tree: Path
    env: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    proxy_cpu: str = ""
    router_cpu: str = ""
    workers: int = 1
    with_router: bool = True
    proxy: Service | None = None
    router: Service | None = None


def serve(
    setup: Setup, name: str, args: list[str], cpu: str, tmp: Path, wait_http: int = 0
) -> subprocess.Popen[bytes]:
    stem = "".join(ch if ch.isalnum() else "_" for ch in f"{setup.label}-{name}")
    ready = tmp / f"{stem}.ready"
    argv = [
        sys.executable, "-m", "gearshift.cli.main", "serve", name, *args, *setup.flags,
        "--metrics-port", "-1", "--log-level", "WARNING", "--ready-file", str(ready),
    ]  # fmt: skip
    if cpu:
        argv = ["taskset", "-c", cpu, *argv]
    env = {
        "PYTHONPATH": f"{setup.tree / 'services'}:{setup.tree / 'operator'}",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **setup.env,
    }
    log = tmp / f"{stem}.log"
    proc = spawn(argv, log, env)
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, f"{setup.label} {name}", 300)
        if proc.poll() is not None:
            raise RuntimeError(f"{setup.label} {name} exited:\n{log.read_text()[-3000:]}")
        if wait_http:
            wait_until(lambda: port_open(wait_http), f"{setup.label} {name} http", 60)
    except BaseException:
        stop(proc)
        raise
    return proc


def tree_yaml(tree: Path, function: str, *args: str) -> str:
    """`function(*args)` of `tree`'s own code as YAML (older trees know fewer fields).

    `function` is "module:name"; a list result is written as several documents.
    """
    module, name = function.split(":")
    code = (
        "import sys, yaml, importlib\n"
        f"out = getattr(importlib.import_module({module!r}), {name!r})(*sys.argv[1:])\n"
        "print(yaml.safe_dump_all(out) if isinstance(out, list) else yaml.safe_dump(out))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "PYTHONPATH": str(tree / "services")},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def start_setup(setup: Setup, stub_base: str, tmp: Path) -> None:
    cfg = tmp / "proxy.yaml"
    cfg.write_text(
        tree_yaml(
            setup.tree, "gearshift.proxy.config:local_standin_config", stub_base, "stub", MODEL
        )
    )
    port = free_port()
    proxy_args = ["--config-file", str(cfg), "--grpc-port", str(port)]
    if setup.workers > 1:
        proxy_args += ["--workers", str(setup.workers)]
    proc = serve(setup, "proxy", proxy_args, setup.proxy_cpu, tmp)
    setup.proxy = Service("proxy", proc, f"127.0.0.1:{port}")
    if not setup.with_router:
        return
    routes = tmp / "routes.yaml"
    # Both tiers on the proxy; requests pin the large tier's route by name.
    address = setup.proxy.address
    routes.write_text(
        tree_yaml(setup.tree, "gearshift.routes.local:local_default_routes", address, MODEL,
                  address, MODEL)
    )  # fmt: skip
    keys = tmp / "keys.yaml"
    keys.write_text(yaml.safe_dump({KEY: "bench"}))
    grpc_port, http_port = free_port(), free_port()
    router_args = [
        "--grpc-port", str(grpc_port), "--http-port", str(http_port),
        "--routes-file", str(routes), "--api-keys-file", str(keys),
    ]  # fmt: skip
    proc = serve(setup, "router", router_args, setup.router_cpu, tmp, wait_http=http_port)
    setup.router = Service("router", proc, f"http://127.0.0.1:{http_port}/v1")


# --- load --------------------------------------------------------------------------------
async def measure(call: Callable[[], Awaitable[None]], n: int, concurrency: int) -> list[float]:
    """Latencies (ms) of n calls with `concurrency` in flight."""
    out: list[float] = []
    per_worker = max(1, n // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            t0 = time.perf_counter()
            await call()
            out.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


@dataclass
class Sample:
    p50: float
    rps: float
    cpu_ms: dict[str, float]


@dataclass
class Client:
    """Calls for each path; several gRPC channels so SO_REUSEPORT can spread them."""

    http: aiohttp.ClientSession
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def direct(self, base: str) -> Callable[[], Awaitable[None]]:
        body = json.dumps(
            {"model": "stub", "messages": [{"role": "user", "content": QUESTION}]}
        ).encode()
        url = base + "/chat/completions"
        headers = {"content-type": "application/json"}

        async def call() -> None:
            async with self.http.post(url, data=body, headers=headers) as r:
                r.raise_for_status()
                json.loads(await r.read())

        return call

    def openai(self, base: str, model: str, key: str) -> Callable[[], Awaitable[None]]:
        body = json.dumps(
            {"model": model, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0}
        ).encode()
        url = base + "/chat/completions"
        headers = {
            "content-type": "application/json",
            "authorization": f"Bearer {key}",
            "x-gearshift-cache-policy": "bypass",
        }

        async def call() -> None:
            async with self.http.post(url, data=body, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"{url}: {r.status} {await r.text()}")
                json.loads(await r.read())

        return call

    def grpc(self, address: str, n_channels: int = 8) -> Callable[[], Awaitable[None]]:
        # A distinct option per channel keeps gRPC from sharing one subchannel.
        chans = [
            grpc.aio.insecure_channel(address, options=[("bench.channel", i)])
            for i in range(n_channels)
        ]
        self.channels += chans
        stubs = [inference_pb2_grpc.InferenceServiceStub(c) for c in chans]
        req = inference_pb2.GenerateRequest(
            tenant="bench",
            model=MODEL,
            messages=[common_pb2.ChatMessage(role="user", content=QUESTION)],
            sampling=common_pb2.SamplingParams(temperature=0.0),
        )
        turn = [0]

        async def call() -> None:
            turn[0] += 1
            await stubs[turn[0] % len(stubs)].Generate(req, timeout=60)

        return call


async def sample(
    call: Callable[[], Awaitable[None]], pids: dict[str, int], n: int, c: int
) -> Sample:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    lat = await measure(call, n, c)
    wall = time.perf_counter() - t0
    cpu = {name: (cpu_seconds(pid) - before[name]) * 1000 / len(lat) for name, pid in pids.items()}
    return Sample(pct(lat, 50), len(lat) / wall, cpu)


Row = tuple[str, str]  # (setup label, path)


async def run_rounds(
    setups: list[Setup],
    stub: subprocess.Popen[bytes],
    stub_base: str,
    litellm: Service | None,
    rounds: int,
    n: int,
    concurrencies: list[int],
) -> dict[tuple[Row, int], list[Sample]]:
    results: dict[tuple[Row, int], list[Sample]] = defaultdict(list)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        client = Client(http)
        paths: list[tuple[Row, Callable[[], Awaitable[None]], dict[str, int]]] = [
            (("stub", "direct"), client.direct(stub_base), {"stub": stub.pid})
        ]
        for s in setups:
            assert s.proxy is not None
            paths.append(
                (
                    (s.label, "proxy"),
                    client.grpc(s.proxy.address),
                    {"proxy": s.proxy.proc.pid, "stub": stub.pid},
                )
            )
            if s.router is not None:
                pids = {"router": s.router.proc.pid, "proxy": s.proxy.proc.pid, "stub": stub.pid}
                call = client.openai(s.router.address, ROUTE, KEY)
                paths.append(((s.label, "router"), call, pids))
        if litellm is not None:
            paths.append(
                (
                    ("litellm", "litellm proxy"),
                    client.openai(litellm.address, "stub", KEY),
                    {"litellm": litellm.proc.pid, "stub": stub.pid},
                )
            )
        for _, call, _ in paths:  # warm-up: connections, pools, first-call paths
            await measure(call, 64, 8)
        for r in range(rounds):
            for c in concurrencies:
                for row, call, pids in paths:
                    count = n if c > 1 else max(50, n // 3)
                    results[(row, c)].append(await sample(call, pids, count, c))
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        for ch in client.channels:
            await ch.close()
    return results


# --- report ------------------------------------------------------------------------------
def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(
    results: dict[tuple[Row, int], list[Sample]], concurrencies: list[int], rounds: int
) -> tuple[str, dict[Row, dict[str, float]]]:
    lo, hi = min(concurrencies), max(concurrencies)
    rows = sorted({row for row, _ in results}, key=lambda r: (r[0] != "stub", r[1], r[0]))
    direct = {c: [s.p50 for s in results[(("stub", "direct"), c)]] for c in concurrencies}
    summary: dict[Row, dict[str, float]] = {}
    lines = [
        f"| set-up | path | added p50 ms, c={lo} | added p50 ms, c={hi} | req/s, c={hi} "
        f"| CPU ms per request, c={hi} |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        added = {}
        for c in (lo, hi):
            samples = results[(row, c)]
            added[c] = med([s.p50 - d for s, d in zip(samples, direct[c], strict=True)])
        top = results[(row, hi)]
        rps = med([s.rps for s in top])
        procs = top[0].cpu_ms.keys()
        cpu = {p: med([s.cpu_ms[p] for s in top]) for p in procs}
        summary[row] = {"added_lo": added[lo], "added_hi": added[hi], "rps": rps, **cpu}
        cpu_text = ", ".join(f"{p} {v:.2f}" for p, v in cpu.items())
        if row[1] == "direct":
            lines.append(
                f"| {row[0]} | direct (p50 {med(direct[lo]):.2f} / {med(direct[hi]):.2f} ms) "
                f"| 0 | 0 | {rps:.0f} | {cpu_text} |"
            )
        else:
            lines.append(
                f"| {row[0]} | {row[1]} | {added[lo]:+.2f} | {added[hi]:+.2f} | {rps:.0f} "
                f"| {cpu_text} |"
            )
    lines.append(f"\nMedians over {rounds} interleaved rounds.")
    return "\n".join(lines), summary


ISSUE_BASELINE = "issue baseline"


def goals(summary: dict[Row, dict[str, float]], baseline: str) -> str:
    def get(label: str, path: str, key: str) -> float:
        return summary.get((label, path), {}).get(key, float("nan"))

    checks = [
        (
            "router path req/s at c=32 vs issue baseline",
            get("tracing off", "router", "rps") / get(ISSUE_BASELINE, "router", "rps"),
            ">= 2.0x",
            2.0,
        ),
        (
            "router path req/s at c=32 vs baseline",
            get("tracing off", "router", "rps") / get(baseline, "router", "rps"),
            ">= 2.0x",
            2.0,
        ),
        (
            "router path added p50 at c=1 (ms)",
            get("tracing off", "router", "added_lo"),
            "<= 2.0",
            2.0,
        ),
        (
            "proxy CPU ms per request",
            get("tracing off", "proxy", "proxy"),
            "<= 0.7",
            0.7,
        ),
        (
            "proxy req/s workers=2 vs workers=1",
            get("workers=2", "proxy", "rps") / get("workers=1", "proxy", "rps"),
            ">= 1.7x",
            1.7,
        ),
        (
            "router req/s with tracing at 10% vs off",
            get("tracing 10%", "router", "rps") / get("tracing off", "router", "rps"),
            ">= 0.90x",
            0.90,
        ),
    ]
    lines = ["| goal | measured | target | met |", "|---|---:|---|---|"]
    for name, value, target, bound in checks:
        ok = value >= bound if target.startswith(">=") else value <= bound
        met = "n/a" if value != value else ("yes" if ok else "NO")
        lines.append(f"| {name} | {value:.2f} | {target} | {met} |")
    return "\n".join(lines)


def start_litellm(stub_base: str, tmp: Path) -> Service | None:
    exe = shutil.which("litellm")
    if exe is None:
        return None
    port = free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "stub",
                        "litellm_params": {
                            "model": "openai/stub",
                            "api_base": stub_base,
                            "api_key": "unused",
                        },
                    }
                ],
                "general_settings": {"master_key": KEY},
            }
        )
    )
    proc = spawn(
        [exe, "--config", str(cfg), "--port", str(port), "--num_workers", "1"],
        tmp / "litellm.log",
    )
    wait_until(lambda: port_open(port), "litellm", 180)
    return Service("litellm", proc, f"http://127.0.0.1:{port}/v1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=600, help="per path, round and c>1")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--baseline-tree", type=Path, help="a checkout to compare against")
    parser.add_argument(
        "--issue-baseline-tree", type=Path, help="main when the issue was filed (its 2x goal)"
    )
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--no-tracing", action="store_true", help="skip the 10%% set-up")
    parser.add_argument("--no-workers", action="store_true", help="skip the workers set-ups")
    parser.add_argument(
        "--no-grpc-export", action="store_true", help="skip the 10%% OTLP/gRPC set-up"
    )
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    cores = os.cpu_count() or 1
    pin = (cores >= 2) if args.pin is None else args.pin
    if pin and shutil.which("taskset") is None:
        pin = False
    router_cpu, proxy_cpu = ("0", "1") if pin else ("", "")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        try:
            port = free_port()
            stub = spawn([sys.executable, "-c", STUB_SERVER, str(port)], tmp / "stub.log")
            procs.append(stub)
            wait_until(lambda: port_open(port), "stub upstream", 30)
            stub_base = f"http://127.0.0.1:{port}/v1"
            setups = [Setup("tracing off", HERE, proxy_cpu=proxy_cpu, router_cpu=router_cpu)]
            baseline = "baseline"
            if args.baseline_tree:
                setups.insert(
                    0,
                    Setup(baseline, args.baseline_tree.resolve(), proxy_cpu=proxy_cpu,
                          router_cpu=router_cpu),
                )  # fmt: skip
            if args.issue_baseline_tree:
                setups.insert(
                    0,
                    Setup(ISSUE_BASELINE, args.issue_baseline_tree.resolve(),
                          proxy_cpu=proxy_cpu, router_cpu=router_cpu),
                )  # fmt: skip
            if not args.no_tracing:
                otlp_port = free_port()
                procs.append(
                    spawn([sys.executable, "-c", OTLP_RECEIVER, str(otlp_port)], tmp / "otlp.log")
                )
                wait_until(lambda: port_open(otlp_port), "OTLP receiver", 30)
                http_port = free_port()
                procs.append(
                    spawn(
                        [sys.executable, "-c", OTLP_HTTP_RECEIVER, str(http_port)],
                        tmp / "otlp-http.log",
                    )
                )
                wait_until(lambda: port_open(http_port), "OTLP/HTTP receiver", 30)
                ratio = ["--trace-sample-ratio", "0.1"]
                http_flags = [
                    "--otlp-endpoint", f"http://127.0.0.1:{http_port}",
                    "--otlp-protocol", "http/protobuf", *ratio,
                ]  # fmt: skip
                grpc_flags = ["--otlp-endpoint", f"127.0.0.1:{otlp_port}", *ratio]
                setups.append(
                    Setup("tracing 10%", HERE, flags=http_flags, proxy_cpu=proxy_cpu,
                          router_cpu=router_cpu),
                )  # fmt: skip
                if not args.no_grpc_export:
                    setups.append(
                        Setup("tracing 10%, OTLP/gRPC", HERE, flags=grpc_flags,
                              proxy_cpu=proxy_cpu, router_cpu=router_cpu),
                    )  # fmt: skip
            if not args.no_workers and cores >= 2:
                setups.append(Setup("workers=1", HERE, with_router=False))
                setups.append(Setup("workers=2", HERE, workers=2, with_router=False))
            for i, s in enumerate(setups):
                sub = tmp / f"setup{i}"
                sub.mkdir()
                start_setup(s, stub_base, sub)
                procs += [x.proc for x in (s.proxy, s.router) if x is not None]
            litellm = start_litellm(stub_base, tmp)
            if litellm is not None:
                procs.append(litellm.proc)
            results = asyncio.run(
                run_rounds(
                    setups, stub, stub_base, litellm, args.rounds, args.requests, concurrencies
                )
            )
        finally:
            for proc in reversed(procs):
                try:
                    stop(proc)
                except subprocess.TimeoutExpired:  # keep the results of a finished run
                    print(f"pid {proc.pid} did not stop in time", file=sys.stderr)
    table, summary = report(results, concurrencies, args.rounds)
    print("### Front door: added latency, throughput and CPU per request\n")
    print(table)
    pins = f"routers on CPU {router_cpu}, proxies on CPU {proxy_cpu}" if pin else "not pinned"
    print(f"\nPinning: {pins}; workers set-ups not pinned. LiteLLM: "
          f"{'measured' if litellm else 'not installed, skipped'}.")  # fmt: skip
    print("\n### Goals (ratios within this run)\n")
    print(goals(summary, baseline))
    print(f"\nMachine: {describe_machine()}")


if __name__ == "__main__":
    main()
