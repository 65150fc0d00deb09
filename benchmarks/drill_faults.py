"""The fault drills of issue 19, black-box against a real `gearshift up`.

    flock /tmp/gearshift-vllm.lock python benchmarks/drill_faults.py [--skip upstream,...]

Starts `gearshift up` in a private GEARSHIFT_HOME on random high ports, then, as a
hostile but fair user with light load (8 concurrent):

  slm       kill -9 of the SLM server under load: share answered, connection refusals at
            the front door, time until the SLM serves again (no person involved)
  cache     kill -9 of the cache under load: share answered
  engine    kill -9 of the SLM's VLLM::EngineCore: time until health is NOT_SERVING,
            time until the SLM serves again
  hostile   hostile inputs: 5xx count, ERROR lines / tracebacks in the router's log, and
            a small request's latency beside a 10 MB body vs. alone (ratio)
  upstream  the stand-in upstream frozen (SIGSTOP): time to the first failure, breaker
            open, first answer after SIGCONT and the breaker's cool-down

Prints one table and the machine; stops the mesh at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gearshift.dev.machine import describe_machine
from gearshift.v1 import inference_pb2, inference_pb2_grpc

QUESTIONS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "What is 2 + 2?",
    "Which planet is closest to the sun?",
    "What do bees make?",
    "How many days are in a week?",
    "What colour is the sky on a clear day?",
    "What is the opposite of hot?",
]


@dataclass
class Mesh:
    home: Path
    base: int
    http: int
    upstream: int
    popen: subprocess.Popen[bytes]
    key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}/v1/chat/completions"

    def port(self, service: str) -> int:
        return self.base + {"router": 0, "cache": 1, "slm": 2, "proxy": 3}[service]

    def headers(self) -> dict[str, str]:
        return {
            "authorization": f"Bearer {self.key}",
            "content-type": "application/json",
            "x-gearshift-cache-policy": "bypass",
        }


@dataclass
class Row:
    drill: str
    figure: str
    value: str
    goal: str


@dataclass
class Tally:
    answered: int = 0
    refused: int = 0  # connection refused at the front door
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.answered + self.refused + sum(self.statuses.values())


def _pids(match: Callable[[str], bool]) -> list[int]:
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if match(text):
            out.append(int(cmdline.parent.name))
    return out


def _service_pid(mesh: Mesh, service: str) -> int:
    ready = str(mesh.home / "run" / f"{service}.ready")
    pids = _pids(lambda c: f"serve {service} " in c and ready in c)
    if not pids:
        raise RuntimeError(f"no {service} process found")
    return min(pids)


def _engine_core_pid(service_pid: int) -> int:
    pgid = os.getpgid(service_pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if "EngineCor" in comm and int(text[text.rindex(")") + 2 :].split()[2]) == pgid:
            return int(stat.parent.name)
    raise RuntimeError("no VLLM::EngineCore process found")


def start_mesh(home: Path) -> Mesh:
    base = random.randrange(52000, 58000, 10)
    mesh_env = {**os.environ, "GEARSHIFT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable, "-m", "gearshift.cli.main", "up", "--no-demo",
        "--base-port", str(base), "--http-port", str(base + 5),
        "--upstream-port", str(base + 6),
    ]  # fmt: skip
    log = (home / "up.log").open("wb")
    popen = subprocess.Popen(argv, env=mesh_env, stdout=log, stderr=subprocess.STDOUT)
    mesh = Mesh(home, base, base + 5, base + 6, popen)
    deadline = time.monotonic() + 600
    while "Gearshift is up." not in (home / "up.log").read_text(errors="replace"):
        if popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("gearshift up failed:\n" + (home / "up.log").read_text()[-3000:])
        time.sleep(1)
    for line in (home / "up.log").read_text().splitlines():
        if "api key" in line:
            mesh.key = line.split("api key ")[1].rstrip(")").strip()
    return mesh


def stop_mesh(mesh: Mesh) -> None:
    if mesh.popen.poll() is None:
        mesh.popen.send_signal(signal.SIGINT)
        try:
            mesh.popen.wait(timeout=90)
        except subprocess.TimeoutExpired:
            mesh.popen.kill()


async def chat(
    session: aiohttp.ClientSession, mesh: Mesh, question: str, model: str = "auto"
) -> tuple[int, float]:
    """HTTP status (0 = connection refused) and seconds."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 12}
    started = time.perf_counter()
    try:
        async with session.post(
            mesh.url, json=body, headers=mesh.headers(), timeout=aiohttp.ClientTimeout(total=150)
        ) as resp:
            await resp.read()
            return resp.status, time.perf_counter() - started
    except aiohttp.ClientConnectorError:
        return 0, time.perf_counter() - started


async def load(mesh: Mesh, requests: int, during: Callable[[], Awaitable[None]]) -> Tally:
    """`requests` chats, 8 at a time, while `during` runs (a kill)."""
    tally = Tally()
    queue = list(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            i = queue.pop()
            status, _ = await chat(session, mesh, f"{QUESTIONS[i % len(QUESTIONS)]} ({i})")
            if status == 200:
                tally.answered += 1
            elif status == 0:
                tally.refused += 1
            else:
                tally.statuses[status] = tally.statuses.get(status, 0) + 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(during(), *(worker(session) for _ in range(8)))
    return tally


async def health(mesh: Mesh, service: str) -> str:
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port(service)}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1
            )
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.aio.AioRpcError as exc:
        return exc.code().name


async def wait_serving(mesh: Mesh, service: str, timeout_s: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await health(mesh, service) == "SERVING":
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    return float("nan")


async def drill_kill(mesh: Mesh, service: str, rows: list[Row]) -> None:
    killed_at: list[float] = []

    async def kill() -> None:
        await asyncio.sleep(3)
        pid = _service_pid(mesh, service)
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        killed_at.append(time.monotonic())

    tally = await load(mesh, 40, kill)
    await wait_serving(mesh, service)
    back = time.monotonic() - killed_at[0]
    share = tally.answered / max(1, tally.total)
    goal = ">= 95%" if service == "slm" else "100%"
    rows.append(
        Row(
            f"kill -9 {service}",
            "answered",
            f"{share:.0%} ({tally.answered}/{tally.total}, other {tally.statuses})",
            goal,
        )
    )
    rows.append(Row(f"kill -9 {service}", "connection refused", str(tally.refused), "0"))
    rows.append(Row(f"kill -9 {service}", "serving again after", f"{back:.0f} s", "no person"))


async def drill_engine(mesh: Mesh, rows: list[Row]) -> None:
    slm = _service_pid(mesh, "slm")
    os.kill(_engine_core_pid(slm), signal.SIGKILL)
    killed = time.monotonic()
    not_serving = float("nan")
    while time.monotonic() - killed < 30:
        if await health(mesh, "slm") != "SERVING":
            not_serving = time.monotonic() - killed
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(5)
    await wait_serving(mesh, "slm")
    back = time.monotonic() - killed
    rows.append(Row("engine killed", "health not SERVING after", f"{not_serving:.1f} s", "<= 5 s"))
    rows.append(Row("engine killed", "serving again after", f"{back:.0f} s", "no person"))


def hostile_bodies() -> list[tuple[str, bytes, dict[str, str]]]:
    def body(**extra: Any) -> bytes:
        return json.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}
        ).encode()

    def msg(content: Any) -> bytes:
        return json.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": content}]}
        ).encode()

    text = {"content-type": "text/plain"}
    return [
        ("lone surrogate", msg("\ud800"), {}),
        ("max_tokens 2**64", body(max_tokens=2**64), {}),
        ("seed 2**70", body(seed=2**70), {}),
        ("JSON 100,000 deep", b"[" * 100_000 + b"]" * 100_000, {}),
        ("max_tokens -1", body(max_tokens=-1), {}),
        ("max_tokens 1.5", body(max_tokens=1.5), {}),
        ("max_tokens string", body(max_tokens="10"), {}),
        (
            "temperature 1e400",
            b'{"messages":[{"role":"user","content":"x"}],"temperature":1' + b"0" * 400 + b"}",
            {},
        ),
        ("temperature -1", body(temperature=-1), {}),
        ("top_p 7", body(top_p=7), {}),
        ("top_logprobs 2**70", body(logprobs=True, top_logprobs=2**70), {}),
        ("n 2**70", body(n=2**70), {}),
        ("n 0", body(n=0), {}),
        ("stop 100 strings", body(stop=["x"] * 100), {}),
        ("stop not a list", body(stop={"a": 1}), {}),
        ("empty messages", json.dumps({"messages": []}).encode(), {}),
        ("messages not a list", json.dumps({"messages": "hi"}).encode(), {}),
        (
            "unknown role",
            json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
            {},
        ),
        ("empty user message", msg(""), {}),
        ("content a number", msg(42), {}),
        ("image part", msg([{"type": "image_url", "image_url": {"url": "x"}}]), {}),
        (
            "10,000 messages",
            json.dumps({"messages": [{"role": "user", "content": "x"}] * 10_000}).encode(),
            {},
        ),
        ("one 3 MB message", msg("x" * 3_000_000), {}),
        ("10 MB body", msg("y" * 10_000_000), {}),
        ("not JSON", b"{", {}),
        ("JSON list", b"[]", {}),
        ("JSON null", b"null", {}),
        ("invalid UTF-8", b'{"messages":[{"role":"user","content":"\xff\xfe"}]}', {}),
        ("text/plain", body(), text),
        ("no content type", body(), {"content-type": ""}),
        ("tools", body(tools=[{"type": "function", "function": {"name": "f"}}]), {}),
        ("response_format json", body(response_format={"type": "json_object"}), {}),
        ("unknown model", body(model="no-such-model"), {}),
        ("bad cache policy", body(), {"x-gearshift-cache-policy": "forever"}),
        ("64 KB header", body(), {"x-big": "a" * 65536}),
        ("200 headers of 1 KB", body(), {f"x-h{i}": "a" * 1024 for i in range(200)}),
        ("bad key", body(), {"authorization": "Bearer nope"}),
    ]


async def _raw_post(mesh: Mesh, data: bytes, headers: dict[str, str]) -> int:
    """A hand-written HTTP/1.1 request (aiohttp's client refuses some hostile headers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.http)
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "host: localhost",
        f"content-length: {len(data)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items() if v != ""]
    # No drain: a server may answer (413) before it has read a large body.
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    try:
        head = await asyncio.wait_for(reader.readline(), timeout=120)
    except (ConnectionError, TimeoutError):
        return -1
    finally:
        writer.close()
    parts = head.split()
    return int(parts[1]) if len(parts) > 1 else -1


async def drill_hostile(mesh: Mesh, rows: list[Row]) -> None:
    log = mesh.home / "logs" / "router.log"
    before = log.stat().st_size
    statuses: dict[str, int] = {}
    for name, data, extra in hostile_bodies():
        headers = {k: v for k, v in mesh.headers().items() if k != "x-gearshift-cache-policy"}
        headers.update(extra)
        statuses[name] = await _raw_post(mesh, data, headers)
    five = {n: s for n, s in statuses.items() if s >= 500 or s < 0}
    with log.open("rb") as f:
        f.seek(before)
        new = f.read().decode(errors="replace")
    errors = [line for line in new.splitlines() if '"ERROR"' in line or "Traceback" in line]
    rows.append(Row("hostile inputs", "inputs sent", str(len(statuses)), "37"))
    rows.append(Row("hostile inputs", "5xx (or no answer)", f"{len(five)} {five or ''}", "0"))
    rows.append(Row("hostile inputs", "ERROR lines / tracebacks", str(len(errors)), "0"))

    async with aiohttp.ClientSession() as session:
        alone = [(await chat(session, mesh, "What is 2 + 2? (alone)"))[1] for _ in range(5)]
        big = json.dumps({"messages": [{"role": "user", "content": "z" * 10_000_000}]})

        async def beside() -> float:
            await asyncio.sleep(0.05)
            return (await chat(session, mesh, "What is 2 + 2? (beside)"))[1]

        async def huge() -> int:
            return await _raw_post(mesh, big.encode(), mesh.headers())

        results = []
        for _ in range(3):
            _, latency = await asyncio.gather(huge(), beside())
            results.append(latency)
    ratio = statistics.median(results) / statistics.median(alone)
    rows.append(
        Row(
            "hostile inputs",
            "small request beside 10 MB body",
            f"{statistics.median(results) * 1000:.0f} ms vs "
            f"{statistics.median(alone) * 1000:.0f} ms alone ({ratio:.2f}x)",
            "<= 2x",
        )
    )


async def drill_upstream(mesh: Mesh, rows: list[Row]) -> None:
    pids = _pids(
        lambda c: "vllm.entrypoints.openai.api_server" in c and f"--port {mesh.upstream}" in c
    )
    pgid = os.getpgid(min(pids))
    os.killpg(pgid, signal.SIGSTOP)
    frozen = time.monotonic()
    first_failure = float("nan")
    opened = float("nan")
    try:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> None:
                nonlocal first_failure
                status, _ = await chat(
                    session, mesh, f"Explain entropy in depth ({i})", model="standin-large"
                )
                if status != 200 and first_failure != first_failure:
                    first_failure = time.monotonic() - frozen

            tasks = [asyncio.create_task(one(i)) for i in range(6)]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port('proxy')}") as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                while time.monotonic() - frozen < 75:
                    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=2)
                    if (
                        info.upstreams
                        and info.upstreams[0].breaker == inference_pb2.BREAKER_STATE_OPEN
                    ):
                        opened = time.monotonic() - frozen
                        break
                    await asyncio.sleep(0.5)
            await asyncio.gather(*tasks)
    finally:
        os.killpg(pgid, signal.SIGCONT)
    resumed = time.monotonic()
    recovered = float("nan")
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - resumed < 60:
            status, _ = await chat(session, mesh, "Say hi.", model="standin-large")
            if status == 200:
                recovered = time.monotonic() - resumed
                break
            await asyncio.sleep(1)
    rows.append(
        Row(
            "upstream frozen",
            "first failure after",
            f"{first_failure:.1f} s",
            "<= first_byte_timeout_s (30 s)",
        )
    )
    rows.append(
        Row("upstream frozen", "breaker open after", f"{opened:.1f} s", "after the threshold (5)")
    )
    rows.append(
        Row(
            "upstream frozen",
            "first answer after SIGCONT",
            f"{recovered:.1f} s",
            "breaker cool-down (10 s)",
        )
    )


async def run(mesh: Mesh, drills: list[str]) -> list[Row]:
    rows: list[Row] = []
    if "hostile" in drills:
        await drill_hostile(mesh, rows)
    if "cache" in drills:
        await drill_kill(mesh, "cache", rows)
    if "upstream" in drills:
        await drill_upstream(mesh, rows)
    if "slm" in drills:
        await drill_kill(mesh, "slm", rows)
    if "engine" in drills:
        await drill_engine(mesh, rows)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help="comma-separated drills to leave out")
    args = parser.parse_args()
    drills = [
        d
        for d in ("hostile", "cache", "upstream", "slm", "engine")
        if d not in args.skip.split(",")
    ]
    home = Path(tempfile.mkdtemp(prefix="gearshift-drill-"))
    print(f"gearshift up in {home} …", flush=True)
    started = time.monotonic()
    mesh = start_mesh(home)
    print(f"up in {time.monotonic() - started:.0f} s; drills: {', '.join(drills)}", flush=True)
    try:
        rows = asyncio.run(run(mesh, drills))
    finally:
        stop_mesh(mesh)
    print()
    print("| drill | figure | measured | goal |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row.drill} | {row.figure} | {row.value} | {row.goal} |")
    print()
    print(describe_machine())
    print(f"logs: {home / 'logs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
