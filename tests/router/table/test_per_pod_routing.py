"""Two real SLM server processes behind one cluster route: the router spreads by load.

The router runs in Kubernetes mode against kmock: one ModelRoute whose Service has two
ready pods in its EndpointSlices, each a real SLM server (vLLM CPU, the embedded model):
the session's in-process server and a second `gearshift serve slm` process. Requests go to
each pod on its own channel; a pod made busy by other traffic gets none of the next ones.
Run under `flock /tmp/gearshift-vllm.lock` (two engines).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import kmock
import pytest
import yaml
from kmock import ResourceInfo
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gearshift.router.app import RouterApp, Settings
from gearshift.runtime.server import GrpcServiceHost
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc, router_pb2, router_pb2_grpc
from tests.router.conftest import KEY_A
from tests.router.table.test_kube_watch import _kubeconfig, _send

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

NS = "mesh"
ROUTES = f"/apis/gearshift.dev/v1alpha1/namespaces/{NS}/modelroutes"
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
AUTH = [("authorization", f"Bearer {KEY_A}")]
GENERATE = ("Generate", "GenerateStream")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _generations(samples: Any) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == "gearshift_grpc_server_handled_total"
        and s.labels.get("method") in GENERATE
        and s.labels.get("service", "").endswith("InferenceService")
        and s.labels.get("code") == "OK"
    )


def _in_process_generations() -> float:
    return _generations(s for m in REGISTRY.collect() for s in m.samples)


async def _process_generations(metrics_port: int) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    return _generations(s for m in text_string_to_metric_families(text) for s in m.samples)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gearshift.cli.main", "serve", "slm"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _wait_ready(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for _ in range(600):
            if process.poll() is not None:
                raise AssertionError(f"second SLM server exited: {_tail(log)}")
            try:
                info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=2)
                if info.ready:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.5)
    raise AssertionError("second SLM server not ready in 300 s")


@pytest.fixture()
async def second_slm(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """`gearshift serve slm` in its own process: (address, metrics port)."""
    grpc_port, metrics_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "GEARSHIFT_SLM_HOST": "127.0.0.1",
        "GEARSHIFT_SLM_GRPC_PORT": str(grpc_port),
        "GEARSHIFT_SLM_METRICS_PORT": str(metrics_port),
        "GEARSHIFT_SLM_GRACE_PERIOD_S": "2",
    }
    log = tmp_path / "slm-b.log"
    process = _spawn(env, log)
    try:
        await _wait_ready(f"127.0.0.1:{grpc_port}", process, log)
        yield f"127.0.0.1:{grpc_port}", metrics_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _slice(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {
                "kubernetes.io/service-name": "pods",
                "app.kubernetes.io/managed-by": "gearshift-operator",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }


# SmolLM2's end-of-text tokens (<|endoftext|>, <|im_end|>): banned to keep a request busy.
END_TOKEN_IDS = (0, 2)
BUSY_ON_A = 8


def _chat(max_tokens: int) -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        model="auto",
        messages=[
            common_pb2.ChatMessage(
                role="user", content=f"Name a colour. (ref {uuid.uuid4().hex[:8]})"
            )
        ],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


async def test_requests_spread_over_two_pods_by_load(
    slm_server: Any,
    second_slm: tuple[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address_b, metrics_b = second_slm
    port_a = int(slm_server.address.rsplit(":", 1)[1])
    port_b = int(address_b.rsplit(":", 1)[1])
    route = {
        "apiVersion": "gearshift.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "pods", "namespace": NS},
        "spec": {
            "tier": "slm",
            "model": {"source": "/models/small", "servedName": slm_server.served_model},
            "engine": {},
            "sizeClass": "small",
            "replicas": {"min": 2, "max": 2},
        },
        # The Service address cannot be reached from here: only per-pod routing answers.
        "status": {
            "endpoint": f"pods.{NS}.svc:50051",
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady"}],
        },
    }
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({KEY_A: "tenant-a"}))
    async with kmock.KubernetesEmulator() as api, kmock.Server(api):
        for key, kind in (
            ("gearshift.dev/v1alpha1/modelroutes", "ModelRoute"),
            ("discovery.k8s.io/v1/endpointslices", "EndpointSlice"),
        ):
            api.resources[key] = ResourceInfo(
                kind=kind,
                namespaced=True,
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            )
        await _send(api, "POST", ROUTES, route)
        await _send(api, "POST", SLICES, _slice("pods-a", port_a))
        await _send(api, "POST", SLICES, _slice("pods-b", port_b))
        monkeypatch.setenv("KUBECONFIG", _kubeconfig(str(api.url), tmp_path / "kc"))
        settings = Settings(
            host="127.0.0.1",
            grpc_port=0,
            metrics_port=-1,
            http_port=-1,
            grace_period_s=2.0,
            log_format="text",
            kubernetes=True,
            watch_namespace=NS,
            api_keys_file=str(keys),
            health_poll_interval_s=0.3,
            difficulty_threshold=1.0,
        )
        app = RouterApp(settings)
        host = GrpcServiceHost(app, settings)
        port = await host.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = router_pb2_grpc.RouterServiceStub(channel)
        table = app.table
        pods = (f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}")
        listed = tuple(sorted(pods))  # the table lists a route's pods in address order
        try:
            for _ in range(200):
                found = table.snapshot.find("pods")
                if found is not None and found.endpoints == listed:
                    break
                await asyncio.sleep(0.1)
            assert found is not None and found.endpoints == listed

            # 1. Concurrent requests reach both pods, each over its own channel.
            a0, b0 = _in_process_generations(), await _process_generations(metrics_b)
            replies = await asyncio.gather(
                *(stub.Chat(_chat(16), metadata=AUTH, timeout=300) for _ in range(12))
            )
            assert all(r.decision.route == "pods" for r in replies)
            to_a = _in_process_generations() - a0
            to_b = await _process_generations(metrics_b) - b0
            assert to_a + to_b == 12
            assert to_a >= 3 and to_b >= 3, (to_a, to_b)

            # 2. Pod A is busy with other traffic: the router's next requests go to B.
            # A's load must be observed above anything B can reach while the router's own
            # requests land (B's score is at most its reported load plus in-flight, <= 2 x 3
            # before the last of 4 picks), so wait for the report of every busy request, and
            # keep them running (end-of-text banned) until the router's requests are done.
            direct_channel = grpc.aio.insecure_channel(slm_server.address)
            direct = inference_pb2_grpc.InferenceServiceStub(direct_channel)
            no_end = {token: -100.0 for token in END_TOKEN_IDS}
            busy = [
                # A unary call object is awaitable, not a coroutine: ensure_future takes it.
                asyncio.ensure_future(
                    direct.Generate(
                        inference_pb2.GenerateRequest(
                            model=slm_server.served_model,
                            messages=[common_pb2.ChatMessage(role="user", content="Count on.")],
                            sampling=common_pb2.SamplingParams(
                                max_tokens=400, temperature=0.0, logit_bias=no_end
                            ),
                        ),
                        timeout=300,
                    )
                )
                for _ in range(BUSY_ON_A)
            ]
            for _ in range(300):
                if table.state(pods[0]).load >= BUSY_ON_A:
                    break
                await asyncio.sleep(0.1)
            assert table.state(pods[0]).load >= BUSY_ON_A, (
                f"the load report never showed A busy: {table.state(pods[0]).load}"
            )
            b1 = await _process_generations(metrics_b)
            replies = await asyncio.gather(
                *(stub.Chat(_chat(8), metadata=AUTH, timeout=300) for _ in range(4))
            )
            assert await _process_generations(metrics_b) - b1 == 4
            for task in busy:
                task.cancel()
            await asyncio.gather(*busy, return_exceptions=True)
            await direct_channel.close()
        finally:
            await channel.close()
            await host.stop(0)
