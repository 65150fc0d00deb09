"""`gearshift up` as a user runs it: every service its own process, on the embedded default.

One mesh is started for the whole module (SLM engine, stand-in vLLM server, proxy,
cache, router), exporting spans to a real OTLP/gRPC receiver; the last test stops it
with Ctrl-C and starts it again to check the prepared model and the cache survive.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import TracerProvider

from gearshift.cli.up import DOCS_DEMO_QUESTION
from gearshift.routes.local import LOCAL_LLM_ROUTE
from gearshift.v1 import common_pb2, router_pb2, router_pb2_grpc
from tests.fixtures.otlp import OtlpReceiver

REPO = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France?"


def free_port(span: int = 1) -> int:
    """A free port below Linux's ephemeral range (32768+), with `span - 1` free after it.

    The mesh takes a minute to start; ports the kernel hands out on its own (vLLM's
    engine sockets, outgoing connections) come from the ephemeral range, so ports
    chosen below it cannot be taken by them in the meantime.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000 - span)
        if all(_is_free(port + i) for i in range(span)):
            return port
    raise RuntimeError("no free port range found")


@dataclass
class Mesh:
    popen: subprocess.Popen[str]
    home: Path
    router: str
    http: str
    output: list[str]
    env: dict[str, str]
    argv: list[str]


def start_mesh(home: Path, otlp: str, demo: bool = False) -> Mesh:
    """Runs `gearshift up` and returns once it is up (and, with `demo`, has answered)."""
    # The five gRPC services (router, cache, slm, proxy, retriever) take base..base+4.
    base, http, upstream = free_port(span=5), free_port(), free_port()
    env = {**os.environ, "GEARSHIFT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable, "-m", "gearshift.cli.main", "up", *([] if demo else ["--no-demo"]),
        "--base-port", str(base), "--http-port", str(http), "--upstream-port", str(upstream),
        "--otlp-endpoint", otlp,
    ]  # fmt: skip
    popen = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    deadline = time.monotonic() + 600
    assert popen.stdout is not None
    for line in popen.stdout:
        output.append(line)
        if ("ask again" if demo else "Press Ctrl-C to stop.") in line:
            break
        assert time.monotonic() < deadline, "".join(output)
    assert popen.poll() is None, "gearshift up exited:\n" + "".join(output)
    return Mesh(popen, home, f"127.0.0.1:{base}", f"http://127.0.0.1:{http}/v1", output, env, argv)


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_mesh(mesh: Mesh) -> int:
    mesh.popen.send_signal(signal.SIGINT)
    try:
        code = mesh.popen.wait(timeout=120)
    finally:
        if mesh.popen.poll() is None:
            mesh.popen.kill()
    assert mesh.popen.stdout is not None
    mesh.output.extend(mesh.popen.stdout.readlines())
    return code


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver) -> Iterator[Mesh]:
    home = tmp_path_factory.mktemp("gearshift-home")
    running = start_mesh(home, otlp_receiver.address)
    yield running
    if running.popen.poll() is None:
        stop_mesh(running)


def api_key(mesh: Mesh) -> str:
    text = (mesh.home / "api-keys.yaml").read_text()
    match = re.search(r'"?(gs-local-[0-9a-f]+)"?', text)
    assert match, text
    return match.group(1)


def gearshift_cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gearshift.cli.main", *args, "--router", mesh.router],
        cwd=REPO, env=mesh.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_up_prints_where_to_reach_the_mesh(mesh: Mesh) -> None:
    banner = "".join(mesh.output)
    assert "Gearshift is up." in banner
    assert mesh.http in banner
    assert api_key(mesh) in banner
    for name in ("cache", "slm", "upstream", "proxy", "router"):
        assert f"starting {name}" in banner


def test_chat_command_answers_and_explains_the_route(mesh: Mesh) -> None:
    result = gearshift_cli(mesh, "chat", QUESTION)
    assert result.returncode == 0, result.stderr
    answer, _, details = result.stdout.partition("---")
    assert "paris" in answer.lower()
    assert re.search(r"route:\s+\S+ \(tier (slm|llm)", details), details
    assert re.search(r"trace id:\s+[0-9a-f]{32}", details), details
    assert re.search(r"latency:\s+\d+ ms", details)


def test_route_explain_does_not_generate(mesh: Mesh) -> None:
    result = gearshift_cli(mesh, "route", "explain", "Prove that sqrt(2) is irrational.")
    assert result.returncode == 0, result.stderr
    assert "difficulty:" in result.stdout and "route:" in result.stdout


def test_openai_sdk_against_the_router(mesh: Mesh) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=mesh.http, api_key=api_key(mesh), timeout=120, max_retries=0)
    reply = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Name a primary color."}],
        temperature=0,
        max_tokens=24,
    )
    assert reply.choices[0].message.content
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Count from one to five."}],
        temperature=0,
        max_tokens=24,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 1 and "".join(pieces).strip()


async def traced_chat(mesh: Mesh, model: str, prompt: str) -> tuple[str, str]:
    """Calls Chat inside a client span; returns (trace id, client span id)."""
    # A private provider: the test process's global one belongs to other tests.
    tracer = TracerProvider().get_tracer("test-client")
    async with grpc.aio.insecure_channel(mesh.router) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        with tracer.start_as_current_span("client") as span:
            carrier: dict[str, str] = {}
            inject(carrier)
            metadata = [("authorization", f"Bearer {api_key(mesh)}"), *carrier.items()]
            reply = await stub.Chat(
                router_pb2.ChatRequest(
                    model=model,
                    messages=[common_pb2.ChatMessage(role="user", content=prompt)],
                    sampling=common_pb2.SamplingParams(temperature=0, max_tokens=16),
                    cache_policy=router_pb2.CACHE_POLICY_NO_STORE,
                ),
                metadata=metadata,
                timeout=300,
            )
        ctx = span.get_span_context()
    trace_id = format(ctx.trace_id, "032x")
    assert reply.trace_id == trace_id, "the router must continue the caller's trace"
    return trace_id, format(ctx.span_id, "016x")


async def test_one_request_is_one_trace_across_every_hop(
    mesh: Mesh, otlp_receiver: OtlpReceiver
) -> None:
    secret_prompt = "Zanzibar-7 secret prompt: what is two plus two?"
    trace_id, client_span = await traced_chat(mesh, LOCAL_LLM_ROUTE, secret_prompt)
    spans = await otlp_receiver.wait_for(trace_id, min_spans=6, timeout_s=20)
    await asyncio.sleep(1.5)  # let every batch exporter flush
    spans = otlp_receiver.trace(trace_id)
    services = {s.service for s in spans}
    assert {"gearshift-router", "gearshift-cache", "gearshift-proxy"} <= services, services

    # Correct parenting: one root (the client's span), every other parent inside the trace.
    ids = {s.span_id for s in spans} | {client_span}
    orphans = [s.name for s in spans if s.parent_span_id not in ids]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"

    # The model call to the upstream carries the GenAI attributes.
    model_spans = [s for s in spans if "gen_ai.request.model" in s.attributes]
    upstream = [s for s in model_spans if s.service == "gearshift-proxy"]
    assert upstream, [s.name for s in spans]
    attrs = upstream[0].attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] > 0

    # The router span states the decision.
    router_attrs = {
        k: v for s in spans if s.service == "gearshift-router" for k, v in s.attributes.items()
    }
    assert any(k.startswith("gearshift.route") for k in router_attrs), router_attrs

    # No prompt or answer text in any span unless a setting allows it.
    for span in spans:
        for value in span.attributes.values():
            assert "Zanzibar" not in str(value), (span.name, value)


def test_ctrl_c_stops_everything_and_a_second_up_starts_warm(
    mesh: Mesh, otlp_receiver: OtlpReceiver
) -> None:
    first = gearshift_cli(mesh, "chat", "What color is a ripe banana?")
    assert first.returncode == 0, first.stderr
    assert gearshift_cli(mesh, "chat", QUESTION).returncode == 0  # the demo's question
    assert stop_mesh(mesh) == 0
    assert "stopped." in "".join(mesh.output)
    port = int(mesh.router.rsplit(":", 1)[1])
    assert _is_free(port), "the router still holds its port after Ctrl-C"

    again = start_mesh(mesh.home, otlp_receiver.address, demo=True)
    try:
        assert not any("preparing" in line for line in again.output), "model was converted again"
        # The demo sends what `gearshift chat` sends, so it shares the chat's cache entry.
        demo = "".join(again.output).partition(f"> {QUESTION}")[2]
        assert "paris" in demo.lower(), demo
        assert re.search(r"cache:\s+hit", demo), demo
        # The second demo question is answered from the project's docs, with citations.
        docs_answer = "".join(again.output).partition(f"> {DOCS_DEMO_QUESTION}")[2]
        assert "source:     gearshift-docs" in docs_answer, docs_answer
        assert re.search(r"\[1\] gearshift-docs: \S*cache\.md", docs_answer), docs_answer
        # The embedded small model would only guess: the demo quotes the passage instead.
        assert "quoting passage [1]" in docs_answer and "From " in docs_answer, docs_answer
        second = gearshift_cli(again, "chat", "What color is a ripe banana?")
        assert second.returncode == 0, second.stderr
        assert re.search(r"cache:\s+hit", second.stdout), second.stdout
        assert first.stdout.partition("---")[0] == second.stdout.partition("---")[0]
    finally:
        assert stop_mesh(again) == 0
