"""What the operator remembers lives in the objects, not in its memory: an operator
restart (or a new leader) in the middle of a scale-down stabilisation window scales down
when the window ends, neither early nor a whole window late, and an image rollout under
way keeps its slot, so the restarted operator does not start a second one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from gearshift.v1 import inference_pb2_grpc
from tests.operator import pod_failures
from tests.operator.apiserver import ApiServer
from tests.operator.test_cluster_day_one import _complete_rollout, _image, deploy_rolled_out
from tests.operator.test_operator import (
    DEPLOYMENTS,
    NS,
    ROUTES,
    _eventually,
    _example,
    _get,
    _LoadReporter,
    _runner,
    _send,
    _stop,
)

pytestmark = pytest.mark.timeout(300)
WINDOW = 12  # the route's scaleDownStabilizationSeconds
RESOLUTION = 1.0  # scale_state_resolution_s


def _pod(name: str, route: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/name": "gearshift-model-server",
                "app.kubernetes.io/instance": route,
            },
        },
        "spec": {
            "containers": [{"name": "slm", "ports": [{"name": "grpc", "containerPort": port}]}]
        },
        # As the kubelet reports a serving replica: Running and Ready (a pod that is
        # not Ready yet counts as loading, and holds scale-ups).
        "status": {**pod_failures.ready(), "podIP": "127.0.0.1"},
    }


async def _replicas(api: ApiServer, name: str) -> int | None:
    dep = await _get(api, f"{DEPLOYMENTS}/{name}")
    return None if dep is None else int(dep["spec"]["replicas"])


async def test_a_restart_mid_window_scales_down_when_the_window_ends(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    from gearshift_operator import handlers

    reporter = _LoadReporter()
    server = grpc.aio.server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(reporter, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    old = handlers.SETTINGS
    handlers.SETTINGS = old.model_copy(update={"scale_state_resolution_s": RESOLUTION})
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        route = _example("small")
        route["metadata"]["name"] = "busy"
        route["spec"]["autoscaling"]["scaleDownStabilizationSeconds"] = WINDOW
        await _send(apiserver, "POST", ROUTES, route)
        await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/busy"), "deployment")
        await _send(
            apiserver, "POST", f"/api/v1/namespaces/{NS}/pods", _pod("busy-0", "busy", port)
        )
        reporter.waiting = 20  # wants 4 replicas at target 5

        async def at(count: int) -> bool:
            return await _replicas(apiserver, "busy") == count

        await _eventually(lambda: at(4), "scale up to 4")
        await asyncio.sleep(1.5)  # a tick or so more at 4
        reporter.waiting = 0  # idle from now: the window that holds 4 replicas starts
        idle_at = time.monotonic()

        async def remembered() -> Any:
            live = await _get(apiserver, f"{ROUTES}/busy")
            memory = ((live or {}).get("status") or {}).get("autoscaler") or {}
            return (
                memory
                if any(r["replicas"] == 4 for r in memory.get("recommendations", []))
                else None
            )

        memory = await _eventually(remembered, "the window kept in status.autoscaler")
        assert memory["lastBusyTime"]
        await asyncio.sleep(WINDOW / 2 - (time.monotonic() - idle_at))
    finally:
        await _stop(runner)

    # The operator restarts half way through the window (an upgrade, a new leader): its
    # memory is gone, the route's status still has it.
    assert handlers.SCALE_STATES  # configure() of the next run clears it, as a new process
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        assert await at(4)
        # Not early: 4 replicas until the window that started when the load fell ends.
        while time.monotonic() - idle_at < WINDOW - 1.5:
            assert await at(4), time.monotonic() - idle_at
            await asyncio.sleep(0.2)
        # Not a whole window late either (a fresh memory would hold 4 until the restart
        # plus a window): down within the window plus the memory's resolution and ticks.
        await _eventually(lambda: at(1), "scale down after the window", timeout=WINDOW)
        down_after = time.monotonic() - idle_at
        assert down_after < WINDOW + RESOLUTION + 3.5, down_after
        print(f"scaled down {down_after:.1f} s after the load fell (window {WINDOW} s)")
    finally:
        handlers.SETTINGS = old
        await _stop(runner)
        await server.stop(0)


async def test_an_image_rollout_keeps_its_slot_across_a_restart(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    from gearshift_operator import handlers

    names = ["route-a", "route-b", "route-c"]
    await deploy_rolled_out(apiserver, names)

    old = handlers.SETTINGS
    new_image = "ghcr.io/gearshift-dev/gearshift-gpu:0.2.0"
    handlers.SETTINGS = old.model_copy(update={"image": new_image, "image_rollout_retry_s": 0.5})

    async def upgraded() -> list[str]:
        deps = [await _get(apiserver, f"{DEPLOYMENTS}/{n}") for n in names]
        return [n for n, d in zip(names, deps, strict=True) if d and _image(d) == new_image]

    try:
        runner = _runner()
        await asyncio.to_thread(runner.__enter__)
        try:
            first = await _eventually(upgraded, "the first route on the new image")
            assert len(first) == 1
        finally:
            await _stop(runner)  # mid-rollout: the first route's pods are still rolling

        runner = _runner()
        await asyncio.to_thread(runner.__enter__)
        try:
            await asyncio.sleep(3.0)  # several retries of the waiting routes
            assert await upgraded() == first  # the slot is still held by the rolling route
            await _complete_rollout(apiserver, first[0])
            await _eventually(lambda: _at_least(upgraded, 2), "the second route after the first")
            assert len(await upgraded()) == 2
        finally:
            await _stop(runner)
    finally:
        handlers.SETTINGS = old


async def _at_least(check: Any, count: int) -> bool:
    return len(await check()) >= count
