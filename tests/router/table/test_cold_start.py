"""A request naming a route scaled to zero waits for the replica it woke.

Real parts: the router's ModelRoute watch against kmock's emulated API (real HTTP), the
routing table and the planner. The "operator" is the test: it flips the route's status
to Ready mid-wait, as the operator does once the Deployment's pod passes its probe.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import kmock
import pytest
from kmock import ResourceInfo

from gearshift.router.core.plan import PipelineConfig
from gearshift.router.core.planner import Planner
from gearshift.router.table.backends import BackendPool
from gearshift.router.table.cold_start import ColdStartWaiter
from gearshift.router.table.kube_watch import KubeRouteWatcher
from gearshift.router.table.routing_table import RoutingTable, cold_routes
from gearshift.routes import ModelRoute
from gearshift.routes.local import local_default_routes
from gearshift.runtime.errors import GearshiftError
from gearshift.v1 import common_pb2, router_pb2
from tests.router.table.test_kube_watch import NS, PATH, _kubeconfig, _send, _until

READY = {
    "endpoint": "127.0.0.1:9",
    "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady"}],
}


def _cold_route() -> dict[str, Any]:
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
    return cold


def _pinned(model: str) -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        model=model, messages=[common_pb2.ChatMessage(role="user", content="hi")]
    )


async def _planner_on_cold_route(
    api: Any, tmp_path: Path, wait_s: float
) -> tuple[Planner, KubeRouteWatcher, RoutingTable]:
    await _send(api, "POST", PATH, _cold_route())
    table = RoutingTable(BackendPool())
    # Short watches: the emulator's shutdown waits for the open watch request to end.
    watcher = KubeRouteWatcher(
        table,
        NS,
        watch_timeout_s=1,
        request_timeout_s=1.0,
        kubeconfig=_kubeconfig(str(api.url), tmp_path / "kc"),
    )
    table.demand_signal = watcher.signal_demand
    watcher.start()
    await _until(lambda: "local-slm" in table.cold, "the cold route")
    # A pinned request needs neither the embedder nor the scorer (no cache here).
    planner = Planner(PipelineConfig(request_timeout_s=30), table, None, None, None)  # type: ignore[arg-type]
    planner.cold_start = ColdStartWaiter(table, wait_s)
    return planner, watcher, table


@pytest.mark.timeout(60)
async def test_a_pinned_request_waits_for_the_route_it_woke(tmp_path: Path) -> None:
    async with kmock.KubernetesEmulator() as api, kmock.Server(api):
        api.resources["gearshift.dev/v1alpha1/modelroutes"] = ResourceInfo(
            kind="ModelRoute", namespaced=True, verbs={"get", "list", "watch", "patch", "create"}
        )
        planner, watcher, table = await _planner_on_cold_route(api, tmp_path, wait_s=20)
        try:
            started = time.monotonic()
            planning = asyncio.ensure_future(planner.plan(_pinned("local-slm"), "t", None))
            await asyncio.sleep(0.5)
            assert not planning.done()  # held, not failed with ROUTE_COLD

            async def demanded() -> bool:
                async with api.request("GET", f"{PATH}/local-slm") as resp:
                    body = await resp.json()
                return "gearshift.dev/demand" in (body["metadata"].get("annotations") or {})

            for _ in range(100):
                if await demanded():
                    break
                await asyncio.sleep(0.05)
            assert await demanded()  # the wait woke the route
            # The operator reports the replica ready: the held request goes on.
            await _send(api, "PATCH", f"{PATH}/local-slm", {"status": READY})
            plan = await asyncio.wait_for(planning, 10)
            assert [r.name for r in plan.routes] == ["local-slm"]
            assert plan.routes[0].endpoints == ("127.0.0.1:9",)
            assert 0.5 <= time.monotonic() - started < 10
        finally:
            await watcher.stop()
            await table.pool.close()


@pytest.mark.timeout(60)
async def test_a_route_that_stays_cold_fails_after_the_wait_naming_it(tmp_path: Path) -> None:
    async with kmock.KubernetesEmulator() as api, kmock.Server(api):
        api.resources["gearshift.dev/v1alpha1/modelroutes"] = ResourceInfo(
            kind="ModelRoute", namespaced=True, verbs={"get", "list", "watch", "patch", "create"}
        )
        planner, watcher, table = await _planner_on_cold_route(api, tmp_path, wait_s=0.6)
        try:
            started = time.monotonic()
            with pytest.raises(GearshiftError) as caught:
                await planner.plan(_pinned("local-slm"), "t", None)
            waited = time.monotonic() - started
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
            assert caught.value.reason == "ROUTE_COLD"
            assert "'local-slm'" in str(caught.value) and "0.6 s" in str(caught.value)
            assert 0.5 <= waited < 5
            # The request's own deadline bounds the wait too.
            started = time.monotonic()
            planner.cold_start = ColdStartWaiter(table, 30)
            with pytest.raises(GearshiftError, match=r"after waiting 0\.3 s"):
                await planner.plan(_pinned("local-slm"), "t", 0.3)
            assert time.monotonic() - started < 5
            # A dry run (route explain) answers at once.
            started = time.monotonic()
            with pytest.raises(GearshiftError, match="no waiting"):
                await planner.plan(_pinned("local-slm"), "t", None, dry_run=True)
            assert time.monotonic() - started < 2
            # Unknown names are still NOT_FOUND at once.
            with pytest.raises(GearshiftError) as unknown:
                await planner.plan(_pinned("nope"), "t", None)
            assert unknown.value.code == grpc.StatusCode.NOT_FOUND
        finally:
            await watcher.stop()
            await table.pool.close()


async def test_the_cold_hold_defaults_to_the_routes_startup_budget_within_the_deadline() -> None:
    """Unset cold_start_wait_s: each route's startupSeconds plus the margin (a 900 s engine
    load is not held for a flat 60 s); the request's deadline still bounds it."""
    mr = ModelRoute.model_validate(_cold_route())
    mr.spec.lifecycle.startup_seconds = 1200
    table = RoutingTable(BackendPool())
    table.set_cold(cold_routes([mr]))
    waiter = ColdStartWaiter(table, None, margin_s=180)
    assert waiter.hold_s("local-slm") == 1380
    assert waiter.hold_s("unknown") == 900 + 180  # the CRD's default startupSeconds
    assert ColdStartWaiter(table, 60).hold_s("local-slm") == 60  # set: fixed for all
    started = time.monotonic()
    with pytest.raises(GearshiftError, match=r"startupSeconds plus 180 s: 1380 s") as caught:
        await waiter.wait("local-slm", 0.2)  # the request has 0.2 s left
    assert caught.value.reason == "ROUTE_COLD"
    assert time.monotonic() - started < 2
    await table.pool.close()
