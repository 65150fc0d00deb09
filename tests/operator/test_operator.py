# ruff: noqa: ASYNC109
"""The operator end to end: kopf (KopfRunner) against the kmock API-server emulator."""

from __future__ import annotations

import asyncio
import copy
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from kopf.testing import KopfRunner
from prometheus_client import REGISTRY

from gearshift.v1 import inference_pb2, inference_pb2_grpc
from tests.operator import pod_failures
from tests.operator.apiserver import ApiServer

EXAMPLES = Path(__file__).parents[2] / "examples/modelroutes"
NS = "default"
ROUTES = f"/apis/gearshift.dev/v1alpha1/namespaces/{NS}/modelroutes"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SERVICES = f"/api/v1/namespaces/{NS}/services"
PDBS = f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"

pytestmark = pytest.mark.timeout(300)


def _example(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    obj["metadata"]["namespace"] = NS
    return obj


async def _get(api: ApiServer, path: str) -> dict[str, Any] | None:
    async with api.get(path) as resp:
        if resp.status == 404:
            return None
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def _send(api: ApiServer, method: str, path: str, body: Any = None) -> None:
    headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
    async with api.request(method, path, json=body, headers=headers) as resp:
        assert resp.status < 300, await resp.text()


async def _eventually(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    """Polls an async check until it returns something truthy (the operator is async)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _runner(*extra: str) -> KopfRunner:
    return KopfRunner(
        ["run", "--standalone", "--verbose", "-A", *extra, "-m", "gearshift_operator.handlers"],
        timeout=60,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _stop(runner: KopfRunner) -> None:
    # KopfRunner's __exit__ joins the operator thread; our loop must keep serving meanwhile.
    await asyncio.to_thread(runner.__exit__, None, None, None)
    assert runner.exception is None, runner.output
    # Handlers must not have failed along the way (kopf would retry and hide it).
    assert "failed with an exception" not in runner.output, runner.output
    assert "Failed to post an event" not in runner.output, runner.output


def _conds(route: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        c["type"]: (c["status"], c["reason"])
        for c in (route.get("status") or {}).get("conditions") or []
    }


async def test_routes_become_deployments_and_follow_their_children(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        # One route per size class plus the provider route.
        for name in ("small", "medium", "large", "provider"):
            await _send(apiserver, "POST", ROUTES, _example(name))
        expected = {"smollm2-small": "1", "llama-large": "4"}
        for route, gpus in expected.items():
            dep = await _eventually(lambda r=route: _get(apiserver, f"{DEPLOYMENTS}/{r}"), route)
            pod = dep["spec"]["template"]["spec"]
            res = pod["containers"][0]["resources"]
            assert res["limits"]["nvidia.com/gpu"] == gpus
            assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
            owner = dep["metadata"]["ownerReferences"][0]
            assert owner["kind"] == "ModelRoute" and owner["name"] == route
            assert owner["controller"] is True
        medium = await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/qwen-medium"), "medium")
        assert medium["spec"]["replicas"] == 0  # scaleToZero route starts cold
        await _eventually(lambda: _get(apiserver, f"{CONFIGMAPS}/provider-large"), "proxy config")
        proxy = await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/provider-large"), "proxy")
        assert proxy["spec"]["template"]["spec"]["containers"][0]["args"] == ["serve", "proxy"]
        await _eventually(lambda: _get(apiserver, f"{SERVICES}/smollm2-small"), "service")
        await _eventually(lambda: _get(apiserver, f"{PDBS}/smollm2-small"), "pdb")

        # Status: Progressing while no replica is ready; endpoint and selector published.
        # Generation 2: the operator filled in spec.replicas.desired (the scale field).
        async def progressing() -> Any:
            route = await _get(apiserver, f"{ROUTES}/smollm2-small")
            if not route or _conds(route).get("Progressing", ("",))[0] != "True":
                return None
            return route if route["status"].get("observedGeneration") == 2 else None

        route = await _eventually(progressing, "Progressing")
        assert route["status"]["endpoint"] == "smollm2-small.default.svc:50051"
        assert route["status"]["selector"].startswith("app.kubernetes.io/instance=smollm2-small")
        assert route["metadata"]["generation"] == 2
        assert route["spec"]["replicas"]["desired"] == 1

        # The Deployment controller reports the replica ready: Ready.
        dep_status = {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
            ],
        }
        await _send(
            apiserver, "PATCH", f"{DEPLOYMENTS}/smollm2-small/status", {"status": dep_status}
        )

        async def ready() -> Any:
            route = await _get(apiserver, f"{ROUTES}/smollm2-small")
            return (
                route
                if route and _conds(route).get("Ready") == ("True", "AllReplicasReady")
                else None
            )

        route = await _eventually(ready, "Ready")
        assert _conds(route)["Progressing"] == ("False", "RolloutComplete")
        assert route["status"]["readyReplicas"] == 1

        # The replica fails: Degraded.
        failed = copy.deepcopy(dep_status)
        failed["readyReplicas"] = 0
        await _send(apiserver, "PATCH", f"{DEPLOYMENTS}/smollm2-small/status", {"status": failed})

        async def degraded() -> Any:
            route = await _get(apiserver, f"{ROUTES}/smollm2-small")
            ok = route and _conds(route).get("Degraded") == ("True", "ReplicasUnavailable")
            return route if ok else None

        route = await _eventually(degraded, "Degraded")
        assert _conds(route)["Ready"][0] == "False"

        # A spec change rolls the Deployment (new template hash and engine env).
        before = await _get(apiserver, f"{DEPLOYMENTS}/smollm2-small")
        assert before is not None
        old_hash = before["spec"]["template"]["metadata"]["annotations"][
            "gearshift.dev/template-hash"
        ]
        await _send(
            apiserver,
            "PATCH",
            f"{ROUTES}/smollm2-small",
            {"spec": {"engine": {"maxModelLen": 2048}}},
        )

        async def rolled() -> Any:
            dep = await _get(apiserver, f"{DEPLOYMENTS}/smollm2-small")
            ann = (dep or {})["spec"]["template"]["metadata"]["annotations"]
            return dep if ann["gearshift.dev/template-hash"] != old_hash else None

        dep = await _eventually(rolled, "rollout")
        env = {
            e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["GEARSHIFT_SLM_MAX_MODEL_LEN"] == "2048"

        # Scaling through the scale field (what the autoscaler or kubectl scale write).
        await _send(
            apiserver, "PATCH", f"{ROUTES}/smollm2-small", {"spec": {"replicas": {"desired": 3}}}
        )

        async def scaled() -> Any:
            dep = await _get(apiserver, f"{DEPLOYMENTS}/smollm2-small")
            return dep if dep and dep["spec"]["replicas"] == 3 else None

        await _eventually(scaled, "scale to 3")

        # A child deleted by hand comes back; one edited by hand is put back.
        await _send(apiserver, "DELETE", f"{SERVICES}/smollm2-small")
        await _eventually(lambda: _get(apiserver, f"{SERVICES}/smollm2-small"), "service back")
        await _send(apiserver, "DELETE", f"{DEPLOYMENTS}/llama-large")
        await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/llama-large"), "deployment back")
        await _send(apiserver, "PATCH", f"{PDBS}/smollm2-small", {"spec": {"maxUnavailable": 3}})

        async def pdb_restored() -> Any:
            pdb = await _get(apiserver, f"{PDBS}/smollm2-small")
            return pdb if pdb and pdb["spec"]["maxUnavailable"] == 1 else None

        await _eventually(pdb_restored, "pdb restored")

        # Deleting the route removes its children (the delete handler; no GC in kmock).
        await _send(apiserver, "DELETE", f"{ROUTES}/provider-large")

        async def gone() -> bool:
            paths = [
                f"{p}/provider-large" for p in (DEPLOYMENTS, SERVICES, PDBS, CONFIGMAPS, ROUTES)
            ]
            return all([await _get(apiserver, p) is None for p in paths])

        await _eventually(gone, "children removed")

        # The operator's Prometheus metrics counted the work (same process as KopfRunner).
        changed = REGISTRY.get_sample_value(
            "gearshift_operator_reconciles_total", {"result": "changed"}
        )
        assert changed is not None and changed >= 4
        assert await _get(apiserver, f"{DEPLOYMENTS}/smollm2-small")  # others untouched
    finally:
        await _stop(runner)


async def test_invalid_route_is_reported_degraded(apiserver: ApiServer, kubeconfig: Path) -> None:
    # The API server would reject this (CEL); if it gets in anyway, the operator says why.
    bad = _example("small")
    bad["spec"]["engine"]["tensorParallelSize"] = 2  # more than the small class's 1 GPU
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, bad)

        async def invalid() -> Any:
            route = await _get(apiserver, f"{ROUTES}/smollm2-small")
            return (
                route
                if route and _conds(route).get("Degraded") == ("True", "InvalidSpec")
                else None
            )

        route = await _eventually(invalid, "InvalidSpec")
        assert "tensorParallelSize" in route["status"]["conditions"][0]["message"]
        assert await _get(apiserver, f"{DEPLOYMENTS}/smollm2-small") is None

        # Even an invalid route can be deleted (the finalizer does not get stuck).
        await _send(apiserver, "DELETE", f"{ROUTES}/smollm2-small")

        async def deleted() -> bool:
            return await _get(apiserver, f"{ROUTES}/smollm2-small") is None

        await _eventually(deleted, "invalid route deleted")
    finally:
        await _stop(runner)


class _LoadReporter(inference_pb2_grpc.InferenceServiceServicer):  # type: ignore[misc]
    """Stands in for a model server's GetModelInfo (the operator's only call to it)."""

    def __init__(self) -> None:
        self.waiting = 0

    async def GetModelInfo(self, request: Any, context: Any) -> Any:
        load = inference_pb2.LoadReport(waiting_requests=self.waiting)
        return inference_pb2.ModelInfo(model="m", backend="vllm", load=load, ready=True)


async def _scaled_events(api: ApiServer, route: str) -> list[str]:
    events = await _get(api, f"/api/v1/namespaces/{NS}/events") or {}
    return [
        e.get("message", "")
        for e in events.get("items", [])
        if e.get("reason") == "Scaled" and e.get("involvedObject", {}).get("name") == route
    ]


async def test_autoscaler_follows_live_load_and_wakes_on_demand(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    reporter = _LoadReporter()
    server = grpc.aio.server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(reporter, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    liveness = f"http://127.0.0.1:{_free_port()}/healthz"
    runner = _runner(f"--liveness={liveness}")
    await asyncio.to_thread(runner.__enter__)
    try:
        route = _example("small")
        route["metadata"]["name"] = "busy"
        await _send(apiserver, "POST", ROUTES, route)
        await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/busy"), "deployment")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "busy-0",
                "namespace": NS,
                "labels": {
                    "app.kubernetes.io/name": "gearshift-model-server",
                    "app.kubernetes.io/instance": "busy",
                },
            },
            "spec": {
                "containers": [{"name": "slm", "ports": [{"name": "grpc", "containerPort": port}]}]
            },
            # As the kubelet reports a serving replica: Running and Ready (a pod that is
            # not Ready yet counts as loading, and holds scale-ups).
            "status": {**pod_failures.ready(), "podIP": "127.0.0.1"},
        }
        await _send(apiserver, "POST", f"/api/v1/namespaces/{NS}/pods", pod)

        # Rising load: 20 waiting at target 5 wants 4 replicas, reached in capped steps 1->2->4.
        reporter.waiting = 20

        async def at_four() -> Any:
            dep = await _get(apiserver, f"{DEPLOYMENTS}/busy")
            return dep if dep and dep["spec"]["replicas"] == 4 else None

        await _eventually(at_four, "scale up to 4")

        async def both_steps() -> list[str]:
            messages = await _scaled_events(apiserver, "busy")
            return messages if any(m.startswith("2 -> 4 replicas") for m in messages) else []

        messages = await _eventually(both_steps, "Scaled events")
        assert messages[0].startswith("1 -> 2 replicas"), messages
        busy = await _get(apiserver, f"{ROUTES}/busy")
        assert busy is not None and busy["spec"]["replicas"]["desired"] == 4

        # Falling load: nothing is removed inside the 300 s stabilisation window.
        reporter.waiting = 0
        ticks_before = len(await _scaled_events(apiserver, "busy"))
        await asyncio.sleep(3)  # several 1 s autoscaler ticks
        dep = await _get(apiserver, f"{DEPLOYMENTS}/busy")
        assert dep is not None and dep["spec"]["replicas"] == 4
        assert len(await _scaled_events(apiserver, "busy")) == ticks_before

        # A cold scale-to-zero route wakes when the router signals demand.
        cold = _example("medium")
        await _send(apiserver, "POST", ROUTES, cold)

        async def cold_dep() -> Any:
            dep = await _get(apiserver, f"{DEPLOYMENTS}/qwen-medium")
            return dep if dep and dep["spec"]["replicas"] == 0 else None

        await _eventually(cold_dep, "cold deployment")
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await _send(
            apiserver,
            "PATCH",
            f"{ROUTES}/qwen-medium",
            {"metadata": {"annotations": {"gearshift.dev/demand": stamp}}},
        )

        async def woke() -> Any:
            dep = await _get(apiserver, f"{DEPLOYMENTS}/qwen-medium")
            return dep if dep and dep["spec"]["replicas"] == 1 else None

        await _eventually(woke, "scale from zero")

        # The liveness endpoint answers with the probe's figures.
        async with httpx.AsyncClient(timeout=5) as http:
            health = (await http.get(liveness)).json()
        assert health["routes"] >= 2
    finally:
        await _stop(runner)
        await server.stop(0)
