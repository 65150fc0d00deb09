"""What a GPU cluster needs on day one, against the kmock API emulator: the scale
subresource's field is always present, route Services are headless (and an old
virtual-IP Service is replaced, since clusterIP cannot change in place), and no route
carries a finalizer, so deleting it (or its namespace) never waits for the operator.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.operator.apiserver import ApiServer
from tests.operator.test_operator import (
    DEPLOYMENTS,
    NS,
    PDBS,
    ROUTES,
    SERVICES,
    _eventually,
    _example,
    _get,
    _runner,
    _send,
    _stop,
)

pytestmark = pytest.mark.timeout(300)


async def test_scale_field_is_filled_in_and_services_are_headless(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    small = _example("small")
    assert "desired" not in small["spec"].get("replicas", {})  # as every example ships
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, small)

        # The API server answers GET .../scale with an error while spec.replicas.desired is
        # missing (specReplicasPath): the operator writes it, as min, so an HPA can act.
        async def pinned() -> Any:
            route = await _get(apiserver, f"{ROUTES}/smollm2-small")
            replicas = ((route or {}).get("spec") or {}).get("replicas") or {}
            return replicas if "desired" in replicas else None

        replicas = await _eventually(pinned, "spec.replicas.desired")
        assert replicas["desired"] == replicas.get("min", 1) == 1

        service = await _eventually(lambda: _get(apiserver, f"{SERVICES}/smollm2-small"), "svc")
        assert service["spec"]["clusterIP"] == "None"
        uid = service["metadata"]["uid"]

        # A Service from before (a virtual IP) is replaced, not patched (which would fail).
        await _send(
            apiserver,
            "PATCH",
            f"{SERVICES}/smollm2-small",
            {"spec": {"clusterIP": "10.96.0.17"}},
        )

        async def replaced() -> Any:
            svc = await _get(apiserver, f"{SERVICES}/smollm2-small")
            ok = svc and svc["metadata"]["uid"] != uid and svc["spec"].get("clusterIP") == "None"
            return svc if ok else None

        svc = await _eventually(replaced, "headless Service recreated")
        assert svc["metadata"]["ownerReferences"][0]["name"] == "smollm2-small"
        assert svc["metadata"]["namespace"] == NS
    finally:
        await _stop(runner)


async def test_routes_carry_no_finalizer_and_go_without_the_operator(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, _example("small"))  # autoscaled, as all examples
        await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/smollm2-small"), "deployment")
        # Let the autoscaler tick (1 s in tests) a few times: it must not add a finalizer.
        await asyncio.sleep(2.5)
        route = await _get(apiserver, f"{ROUTES}/smollm2-small")
        assert route is not None
        assert not route["metadata"].get("finalizers")
    finally:
        await _stop(runner)
    # The operator is gone (uninstalled, or its namespace deleted first): the route still
    # goes at once, and the garbage collector takes its children by owner reference.
    await _send(apiserver, "DELETE", f"{ROUTES}/smollm2-small")
    assert await _get(apiserver, f"{ROUTES}/smollm2-small") is None
    for path in (DEPLOYMENTS, SERVICES, PDBS):
        assert await _get(apiserver, f"{path}/smollm2-small") is None


def _image(dep: dict[str, Any]) -> str:
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


async def _complete_rollout(api: ApiServer, name: str) -> None:
    """What the Deployment controller reports once every replica runs the new template."""
    dep = await _get(api, f"{DEPLOYMENTS}/{name}")
    assert dep is not None
    done = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    done["observedGeneration"] = dep["metadata"]["generation"]
    await _send(api, "PATCH", f"{DEPLOYMENTS}/{name}/status", {"status": done})


async def deploy_rolled_out(apiserver: ApiServer, names: list[str]) -> None:
    """Routes `names` (the small example) deployed by one operator run, rollouts complete."""
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        for name in names:
            route = _example("small")
            route["metadata"]["name"] = name
            route["spec"]["model"]["servedName"] = name
            await _send(apiserver, "POST", ROUTES, route)
        for name in names:
            await _eventually(lambda n=name: _get(apiserver, f"{DEPLOYMENTS}/{n}"), name)
            await _complete_rollout(apiserver, name)
    finally:
        await _stop(runner)


async def test_a_new_image_rolls_one_route_at_a_time(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    from gearshift_operator import handlers

    names = ["route-a", "route-b", "route-c"]
    await deploy_rolled_out(apiserver, names)

    # A chart upgrade: the operator restarts with a new model-server image.
    old = handlers.SETTINGS
    new_image = "ghcr.io/gearshift-dev/gearshift-gpu:0.2.0"
    handlers.SETTINGS = old.model_copy(update={"image": new_image, "image_rollout_retry_s": 0.5})
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:

        async def upgraded(count: int) -> list[str] | None:
            deps = [await _get(apiserver, f"{DEPLOYMENTS}/{n}") for n in names]
            done = [n for n, d in zip(names, deps, strict=True) if d and _image(d) == new_image]
            return done if len(done) >= count else None

        first = await _eventually(lambda: upgraded(1), "the first route on the new image")
        await asyncio.sleep(2.0)  # several retries: the others keep their image meanwhile
        assert await upgraded(1) == first and not await upgraded(2)
        await _complete_rollout(apiserver, first[0])
        second = await _eventually(lambda: upgraded(2), "the second route after the first")
        assert not await upgraded(3)
        await _complete_rollout(apiserver, next(n for n in second if n not in first))
        await _eventually(lambda: upgraded(3), "every route on the new image")
    finally:
        handlers.SETTINGS = old
        await _stop(runner)
