"""The router's ModelRoute watch against kmock's emulated Kubernetes API (real HTTP)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import yaml
from kmock import ResourceInfo

from gearshift.router.table.backends import BackendPool
from gearshift.router.table.kube_watch import KubeRouteWatcher
from gearshift.router.table.routing_table import RoutingTable
from gearshift.routes.local import local_default_routes

NS = "mesh"
PATH = f"/apis/gearshift.dev/v1alpha1/namespaces/{NS}/modelroutes"


def _kubeconfig(url: str, path: Path) -> str:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "k", "cluster": {"server": url.rstrip("/")}}],
                "users": [{"name": "k", "user": {"token": "t"}}],
                "contexts": [{"name": "k", "context": {"cluster": "k", "user": "k"}}],
                "current-context": "k",
            }
        )
    )
    return str(path)


async def _until(check: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _send(api: Any, method: str, path: str, body: Any = None) -> None:
    headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
    async with api.request(method, path, json=body, headers=headers) as resp:
        assert resp.status < 300, await resp.text()


async def test_watch_follows_created_changed_and_deleted_routes(tmp_path: Path) -> None:
    slm, llm = local_default_routes("127.0.0.1:9", "small", "127.0.0.1:9", "large")
    for doc in (slm, llm):
        doc["metadata"]["namespace"] = NS
    async with kmock.KubernetesEmulator() as api, kmock.Server(api):
        api.resources["gearshift.dev/v1alpha1/modelroutes"] = ResourceInfo(
            kind="ModelRoute",
            namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
        await _send(api, "POST", PATH, slm)  # present before the router starts: the list
        table = RoutingTable(BackendPool())
        watcher = KubeRouteWatcher(
            table, NS, watch_timeout_s=2, kubeconfig=_kubeconfig(str(api.url), tmp_path / "kc")
        )
        watcher.start()
        try:
            await _until(lambda: table.snapshot.find("local-slm") is not None, "the listed route")
            await _send(api, "POST", PATH, llm)  # a watch event
            await _until(lambda: table.snapshot.find("local-llm") is not None, "the new route")
            await _send(
                api,
                "PATCH",
                f"{PATH}/local-slm",
                {"spec": {"routing": {"endpoint": "127.0.0.1:10"}}},
            )

            def moved() -> bool:
                route = table.snapshot.find("local-slm")
                return route is not None and route.endpoints == ("127.0.0.1:10",)

            await _until(moved, "the changed endpoint")
            await _send(api, "DELETE", f"{PATH}/local-llm")
            await _until(lambda: table.snapshot.find("local-llm") is None, "the deletion")
        finally:
            await watcher.stop()
            await table.pool.close()


async def test_a_cold_route_is_woken_through_its_demand_annotation(tmp_path: Path) -> None:
    """Traffic for a scaled-to-zero route sets the annotation the operator wakes it on."""
    cold, _ = local_default_routes("127.0.0.1:9", "small", "127.0.0.1:9", "large")
    cold["metadata"]["namespace"] = NS
    del cold["spec"]["routing"]["endpoint"]  # deployed by the operator, no replica yet
    cold["spec"].update(
        model={"source": "/models/small", "servedName": "small"},
        engine={},
        sizeClass="small",
        replicas={"min": 0, "max": 2},
        autoscaling={"scaleToZero": True},
    )
    async with kmock.KubernetesEmulator() as api, kmock.Server(api):
        api.resources["gearshift.dev/v1alpha1/modelroutes"] = ResourceInfo(
            kind="ModelRoute",
            namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
        await _send(api, "POST", PATH, cold)
        table = RoutingTable(BackendPool())
        watcher = KubeRouteWatcher(
            table, NS, watch_timeout_s=2, kubeconfig=_kubeconfig(str(api.url), tmp_path / "kc")
        )
        table.demand_signal = watcher.signal_demand
        watcher.start()
        try:
            await _until(lambda: "local-slm" in table.cold, "the cold route")
            assert table.snapshot.find("local-slm") is None  # not routable while cold
            assert table.wake(tier="llm") == []
            assert table.wake(tier="slm") == ["local-slm"]

            annotations: dict[str, str] = {}

            async def annotated() -> bool:
                async with api.request("GET", f"{PATH}/local-slm") as resp:
                    body = await resp.json()
                annotations.update(body["metadata"].get("annotations") or {})
                return "gearshift.dev/demand" in annotations

            for _ in range(100):
                if await annotated():
                    break
                await asyncio.sleep(0.05)
            assert re.fullmatch(
                r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", annotations["gearshift.dev/demand"]
            )
        finally:
            await watcher.stop()
            await table.pool.close()


SOURCES_PATH = f"/apis/gearshift.dev/v1alpha1/namespaces/{NS}/datasources"


def _data_source(name: str, description: str, endpoint: str = "127.0.0.1:9") -> dict[str, Any]:
    return {
        "apiVersion": "gearshift.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"description": description, "examples": ["How do I page on-call?"]},
        "status": {"endpoint": endpoint, "contentVersion": "v1"},
    }


async def test_watch_hot_swaps_data_sources_beside_routes(tmp_path: Path) -> None:
    """DataSources join the table from the watch, change and leave it without a restart."""
    slm, _ = local_default_routes("127.0.0.1:9", "small", "127.0.0.1:9", "large")
    slm["metadata"]["namespace"] = NS
    verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
    async with kmock.KubernetesEmulator() as api, kmock.Server(api):
        api.resources["gearshift.dev/v1alpha1/modelroutes"] = ResourceInfo(
            kind="ModelRoute", namespaced=True, verbs=verbs
        )
        api.resources["gearshift.dev/v1alpha1/datasources"] = ResourceInfo(
            kind="DataSource", namespaced=True, verbs=verbs
        )
        await _send(api, "POST", PATH, slm)
        await _send(api, "POST", SOURCES_PATH, _data_source("runbooks", "Platform runbooks"))
        table = RoutingTable(BackendPool())
        watcher = KubeRouteWatcher(
            table, NS, watch_timeout_s=2, kubeconfig=_kubeconfig(str(api.url), tmp_path / "kc")
        )
        watcher.start()
        try:
            await _until(lambda: table.snapshot.source("runbooks") is not None, "listed source")
            assert table.snapshot.find("local-slm") is not None  # routes are kept beside it
            source = table.snapshot.source("runbooks")
            assert source is not None and source.endpoint == "127.0.0.1:9"
            assert source.examples == ("How do I page on-call?",)
            # A source without a resolved endpoint is not routable yet.
            pending = _data_source("wiki", "Team wiki", endpoint="")
            await _send(api, "POST", SOURCES_PATH, pending)
            await _send(
                api,
                "PATCH",
                f"{SOURCES_PATH}/runbooks",
                {"spec": {"description": "Runbooks of the platform team"}},
            )

            def changed() -> bool:
                found = table.snapshot.source("runbooks")
                return found is not None and found.description == "Runbooks of the platform team"

            await _until(changed, "the changed description")
            assert table.snapshot.source("wiki") is None
            await _send(api, "PATCH", f"{SOURCES_PATH}/wiki", {"status": {"endpoint": "h:1"}})
            await _until(lambda: table.snapshot.source("wiki") is not None, "resolved endpoint")
            await _send(api, "DELETE", f"{SOURCES_PATH}/runbooks")
            await _until(lambda: table.snapshot.source("runbooks") is None, "the deletion")
            assert table.snapshot.find("local-slm") is not None
        finally:
            await watcher.stop()
            await table.pool.close()


SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"


def _slice(name: str, service: str, pods: list[tuple[str, dict[str, bool]]]) -> dict[str, Any]:
    """An EndpointSlice as the EndpointSlice controller writes it for an operator Service."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {
                "kubernetes.io/service-name": service,
                "app.kubernetes.io/managed-by": "gearshift-operator",
            },
        },
        "addressType": "IPv4",
        "ports": [
            {"name": "metrics", "port": 9090, "protocol": "TCP"},
            {"name": "grpc", "port": 50051, "protocol": "TCP"},
        ],
        "endpoints": [{"addresses": [ip], "conditions": cond} for ip, cond in pods],
    }


async def test_a_deployed_route_is_routed_to_each_ready_pod(tmp_path: Path) -> None:
    """EndpointSlices replace the Service address: one endpoint (channel) per ready pod."""
    route, _ = local_default_routes("127.0.0.1:9", "small", "127.0.0.1:9", "large")
    route["metadata"] = {"name": "pods", "namespace": NS}
    del route["spec"]["routing"]["endpoint"]
    del route["spec"]["routing"]["fallback"]
    route["spec"].update(
        model={"source": "/models/small", "servedName": "small"}, engine={}, sizeClass="small"
    )
    route["status"] = {
        "endpoint": f"pods.{NS}.svc:50051",
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady"}],
    }
    ready = {"ready": True, "serving": True, "terminating": False}
    starting = {"ready": False, "serving": False, "terminating": False}
    stopping = {"ready": False, "serving": True, "terminating": True}
    async with kmock.KubernetesEmulator() as api, kmock.Server(api):
        api.resources["gearshift.dev/v1alpha1/modelroutes"] = ResourceInfo(
            kind="ModelRoute",
            namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
        api.resources["discovery.k8s.io/v1/endpointslices"] = ResourceInfo(
            kind="EndpointSlice",
            namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
        await _send(api, "POST", PATH, route)
        table = RoutingTable(BackendPool())
        watcher = KubeRouteWatcher(
            table, NS, watch_timeout_s=2, kubeconfig=_kubeconfig(str(api.url), tmp_path / "kc")
        )
        watcher.start()

        def endpoints() -> tuple[str, ...]:
            found = table.snapshot.find("pods")
            return found.endpoints if found is not None else ()

        try:
            # No slice yet: the Service address.
            await _until(lambda: endpoints() == (f"pods.{NS}.svc:50051",), "the Service")
            pods = [("10.0.0.1", ready), ("10.0.0.2", starting), ("10.0.0.3", stopping)]
            await _send(api, "POST", SLICES, _slice("pods-abc", "pods", pods))
            # Another Service's slice is not this route's.
            await _send(api, "POST", SLICES, _slice("other-xyz", "other", [("10.9.9.9", ready)]))
            await _until(lambda: endpoints() == ("10.0.0.1:50051",), "the one ready pod")
            # The starting pod becomes ready: both get requests, each on its own channel.
            await _send(api, "DELETE", f"{SLICES}/pods-abc")
            pods[1] = ("10.0.0.2", ready)
            await _send(api, "POST", SLICES, _slice("pods-abc", "pods", pods))
            await _until(
                lambda: endpoints() == ("10.0.0.1:50051", "10.0.0.2:50051"), "two ready pods"
            )
            assert set(table.endpoints) == {"10.0.0.1:50051", "10.0.0.2:50051"}
            table.state("10.0.0.1:50051").load = 7.0
            picks = {table.pick_endpoint(table.snapshot.find("pods")) for _ in range(20)}  # type: ignore[arg-type]
            assert picks == {"10.0.0.2:50051"}  # the less loaded pod
            # All slices gone (scaled to zero, or the slice controller lagging): the Service.
            await _send(api, "DELETE", f"{SLICES}/pods-abc")
            await _until(lambda: endpoints() == (f"pods.{NS}.svc:50051",), "back to the Service")
        finally:
            await watcher.stop()
            await table.pool.close()
