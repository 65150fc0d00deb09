"""Reconciliation that is safe on a shared cluster: kopf against the kmock API emulator.

A route never takes over an object it did not create; children the API server refuses
become an InvalidSpec condition carrying the server's message (no GPUs requested, no
retry loop); a fallback naming a missing route is a status condition; children are
watched through a server-side label selector.
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
    ROUTES,
    SERVICES,
    _conds,
    _eventually,
    _example,
    _get,
    _runner,
    _send,
    _stop,
)

pytestmark = pytest.mark.timeout(300)


def _condition(route: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (route.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


async def _route_with(api: ApiServer, name: str, type_: str, state: tuple[str, str]) -> Any:
    async def check() -> Any:
        route = await _get(api, f"{ROUTES}/{name}")
        return route if route and _conds(route).get(type_) == state else None

    return await _eventually(check, f"{name} {type_}={state}")


async def test_a_route_never_takes_over_an_object_it_does_not_own(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "smollm2-small", "namespace": NS, "labels": {"team": "search"}},
        "spec": {"selector": {"app": "search"}, "ports": [{"port": 80}]},
    }
    await _send(apiserver, "POST", SERVICES, foreign)
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, _example("small"))
        route = await _route_with(
            apiserver, "smollm2-small", "Degraded", ("True", "OwnershipConflict")
        )
        message = _condition(route, "Degraded")["message"]
        assert "Service smollm2-small already exists" in message
        assert _conds(route)["Ready"][0] == "False"
        # The other team's Service is untouched and no GPU was requested.
        service = await _get(apiserver, f"{SERVICES}/smollm2-small")
        assert service is not None
        assert service["metadata"]["labels"] == {"team": "search"}
        assert not service["metadata"].get("ownerReferences")
        assert service["spec"]["selector"] == {"app": "search"}
        assert await _get(apiserver, f"{DEPLOYMENTS}/smollm2-small") is None

        # Once the name is free, the next change deploys the route.
        await _send(apiserver, "DELETE", f"{SERVICES}/smollm2-small")
        await _send(
            apiserver, "PATCH", f"{ROUTES}/smollm2-small", {"spec": {"routing": {"weight": 2}}}
        )
        dep = await _eventually(
            lambda: _get(apiserver, f"{DEPLOYMENTS}/smollm2-small"), "deployment"
        )
        assert dep["metadata"]["ownerReferences"][0]["name"] == "smollm2-small"
        await _route_with(apiserver, "smollm2-small", "Progressing", ("True", "RolloutInProgress"))

        # Children are watched with a server-side selector: only the operator's objects.
        selectors = dict(apiserver.watch_selectors)
        for plural in ("deployments", "services", "configmaps", "poddisruptionbudgets"):
            assert "app.kubernetes.io/managed-by=gearshift-operator" in selectors[plural]
    finally:
        await _stop(runner)


async def test_children_the_api_server_refuses_become_invalid_spec(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    refusal = (
        'admission webhook "gpu-quota.example.com" denied the request: '
        "namespace default has no nvidia.com/gpu quota left"
    )
    apiserver.deny("deployments", 403, refusal)
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, _example("small"))
        route = await _route_with(apiserver, "smollm2-small", "Degraded", ("True", "InvalidSpec"))
        message = _condition(route, "Degraded")["message"]
        assert "refused Deployment smollm2-small" in message
        assert "HTTP 403" in message and refusal in message
        assert await _get(apiserver, f"{DEPLOYMENTS}/smollm2-small") is None

        # The cluster admits it again (quota raised): the next change deploys it.
        apiserver.allow("deployments")
        await _send(
            apiserver, "PATCH", f"{ROUTES}/smollm2-small", {"spec": {"routing": {"weight": 2}}}
        )
        await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/smollm2-small"), "deployment")
        await _route_with(apiserver, "smollm2-small", "Degraded", ("False", "AsExpected"))
    finally:
        await _stop(runner)


async def test_a_fallback_to_a_missing_route_is_a_status_condition(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, _example("large"))  # fallback: provider-large
        route = await _route_with(
            apiserver, "llama-large", "FallbackResolved", ("False", "FallbackNotFound")
        )
        assert "provider-large" in _condition(route, "FallbackResolved")["message"]
        # The route itself is deployed all the same.
        await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/llama-large"), "deployment")

        await _send(apiserver, "POST", ROUTES, _example("provider"))
        await _route_with(apiserver, "llama-large", "FallbackResolved", ("True", "FallbackFound"))

        await _send(apiserver, "DELETE", f"{ROUTES}/provider-large")
        await _route_with(
            apiserver, "llama-large", "FallbackResolved", ("False", "FallbackNotFound")
        )
    finally:
        await _stop(runner)
