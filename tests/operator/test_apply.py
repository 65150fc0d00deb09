"""Apply that converges: the operator owns exactly the fields it sets.

Against the kmock emulator, which (like the real API server) replaces an object on PUT,
refuses a stale resourceVersion with 409, stores quantities canonically and refuses a
pod template mounting an undeclared volume. A field the operator stops setting goes,
fields others set (an HPA's replica count, `kubectl rollout restart`'s annotation) stay,
and a reconcile of an unchanged route writes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.operator.apiserver import ApiServer
from tests.operator.test_operator import (
    DEPLOYMENTS,
    NS,
    ROUTES,
    _conds,
    _eventually,
    _example,
    _get,
    _runner,
    _send,
    _stop,
)

pytestmark = pytest.mark.timeout(300)
RESTARTED = "kubectl.kubernetes.io/restartedAt"


# --- the operator end to end -------------------------------------------------------------


def _pod(dep: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = dep["spec"]["template"]["spec"]
    return pod


def _route(name: str, **spec: Any) -> dict[str, Any]:
    route = _example("small")
    route["metadata"]["name"] = name
    route["spec"]["model"]["servedName"] = name
    route["spec"].pop("autoscaling")  # no autoscaler task moving replicas meanwhile
    route["spec"]["routing"].pop("fallback")
    route["spec"].update(spec)
    return route


async def _handled(api: ApiServer, name: str, marker: str) -> None:
    """Touches the route (an annotation) and waits until kopf has handled that change.

    Not a label: kopf.adopt copies the route's labels onto its children (a real change).
    """
    touch = {"metadata": {"annotations": {"example.com/touch": marker}}}
    await _send(api, "PATCH", f"{ROUTES}/{name}", touch)

    async def done() -> Any:
        route = await _get(api, f"{ROUTES}/{name}")
        handled = (route or {}).get("metadata", {}).get("annotations", {})
        return marker in handled.get("gearshift.dev/last-handled-configuration", "")

    await _eventually(done, f"route {name} handled ({marker})")
    await asyncio.sleep(0.5)  # the child events that the handler's writes caused


async def test_hf_to_pvc_leaves_no_fetch_container_and_no_token_volume(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    route = _route("switch")
    route["spec"]["model"]["tokenSecretRef"] = {"name": "hf", "key": "token"}
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, route)
        dep = await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/switch"), "deployment")
        assert [c["name"] for c in _pod(dep)["initContainers"]] == ["fetch-weights"]
        assert "hf-token" in {v["name"] for v in _pod(dep)["volumes"]}

        await _send(
            apiserver,
            "PATCH",
            f"{ROUTES}/switch",
            {"spec": {"model": {"source": "pvc://weights/smollm2", "tokenSecretRef": None}}},
        )

        async def switched() -> Any:
            dep = await _get(apiserver, f"{DEPLOYMENTS}/switch")
            main = _pod(dep or {"spec": {"template": {"spec": {"containers": [{}]}}}})
            env = {e["name"]: e["value"] for e in main["containers"][0].get("env", [])}
            return dep if env.get("GEARSHIFT_SLM_MODEL") == "/weights/smollm2" else None

        dep = await _eventually(switched, "Deployment on the pvc:// model")
        pod = _pod(dep)
        assert "initContainers" not in pod
        volumes = {v["name"] for v in pod["volumes"]}
        assert "hf-token" not in volumes and "weights" in volumes
        mounts = {m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert "hf-token" not in mounts
        env = {e["name"] for e in pod["containers"][0]["env"]}
        assert not {"HF_HUB_OFFLINE", "HF_TOKEN_PATH"} & env
        routed = await _get(apiserver, f"{ROUTES}/switch")
        assert routed is not None
        assert _conds(routed).get("Degraded", ("", ""))[1] != "InvalidSpec", routed["status"]
    finally:
        await _stop(runner)


async def test_a_size_class_node_selector_change_replaces_the_old_keys(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    from gearshift_operator import handlers

    old = handlers.SETTINGS
    table = {"small": {"gpu": 1, "nodeSelector": {"pool": "gpu-a", "zone": "a"}}}
    handlers.SETTINGS = old.model_copy(update={"size_classes": json.dumps(table)})
    try:
        runner = _runner()
        await asyncio.to_thread(runner.__enter__)
        try:
            await _send(apiserver, "POST", ROUTES, _route("sized"))
            dep = await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/sized"), "deployment")
            assert _pod(dep)["nodeSelector"] == {"pool": "gpu-a", "zone": "a"}
        finally:
            await _stop(runner)
        # The platform team moves the class to other nodes; the operator restarts with it.
        table = {"small": {"gpu": 1, "nodeSelector": {"gearshift.dev/gpu-class": "l4"}}}
        handlers.SETTINGS = old.model_copy(update={"size_classes": json.dumps(table)})
        runner = _runner()
        await asyncio.to_thread(runner.__enter__)
        try:

            async def moved() -> Any:
                dep = await _get(apiserver, f"{DEPLOYMENTS}/sized")
                selector = _pod(dep or {"spec": {"template": {"spec": {}}}}).get("nodeSelector")
                return selector if selector != {"pool": "gpu-a", "zone": "a"} else None

            assert await _eventually(moved, "new nodeSelector") == {"gearshift.dev/gpu-class": "l4"}
        finally:
            await _stop(runner)
    finally:
        handlers.SETTINGS = old


POD_TEMPLATE: dict[str, Any] = {
    "metadata": {"annotations": {"team.example/owner": "ml"}, "labels": {"team": "ml"}},
    "spec": {
        "priorityClassName": "inference",
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"team": "ml"}},
                        },
                    }
                ]
            }
        },
        "containers": [
            {
                "name": "slm",
                "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}],
                "resources": {"limits": {"ephemeral-storage": "20Gi"}},
                "volumeMounts": [{"name": "extra", "mountPath": "/extra"}],
            },
            {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "infinity"]},
        ],
        "volumes": [{"name": "extra", "emptyDir": {}}],
    },
}

# (what to remove from spec.podTemplate as a merge patch, how to find it in the Deployment)
REMOVALS: list[tuple[str, dict[str, Any], Any]] = [
    (
        "annotation",
        {"metadata": {"annotations": None}},
        lambda t: "team.example/owner" in t["metadata"].get("annotations", {}),
    ),
    ("label", {"metadata": {"labels": None}}, lambda t: "team" in t["metadata"]["labels"]),
    (
        "priorityClassName",
        {"spec": {"priorityClassName": None}},
        lambda t: "priorityClassName" in t["spec"],
    ),
    ("affinity", {"spec": {"affinity": None}}, lambda t: "affinity" in t["spec"]),
]


def _main(template: dict[str, Any]) -> dict[str, Any]:
    main: dict[str, Any] = template["spec"]["containers"][0]
    return main


async def test_removing_each_pod_template_field_removes_it(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    route = _route("custom", podTemplate=copy.deepcopy(POD_TEMPLATE))
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, route)
        dep = await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/custom"), "deployment")
        template = dep["spec"]["template"]
        for what, _patch, present in REMOVALS:
            assert present(template), what
        assert [c["name"] for c in template["spec"]["containers"]] == ["slm", "sidecar"]

        async def removed(present: Any) -> Any:
            dep = await _get(apiserver, f"{DEPLOYMENTS}/custom")
            return dep if dep and not present(dep["spec"]["template"]) else None

        for what, patch, present in REMOVALS:
            await _send(apiserver, "PATCH", f"{ROUTES}/custom", {"spec": {"podTemplate": patch}})
            dep = await _eventually(lambda p=present: removed(p), f"{what} removed")
        template = dep["spec"]["template"]
        assert "gearshift.dev/template-hash" in template["metadata"]["annotations"]
        assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == "custom"

        # The containers part: the env var, the extra limit, the mount and the volume, the
        # sidecar; the main container's own settings stay.
        spec_only = {"containers": [{"name": "slm"}], "volumes": None}
        patch = {"spec": {"podTemplate": {"spec": {**spec_only}}}}
        await _send(apiserver, "PATCH", f"{ROUTES}/custom", patch)
        # A merge patch replaces lists whole: the route now asks for container slm only.

        def gone(t: dict[str, Any]) -> bool:
            return (
                len(t["spec"]["containers"]) == 1
                and "volumes" in t["spec"]
                and not any(v["name"] == "extra" for v in t["spec"]["volumes"])
            )

        dep = await _eventually(lambda: removed(lambda t: not gone(t)), "containers part removed")
        main = _main(dep["spec"]["template"])
        assert "VLLM_LOGGING_LEVEL" not in {e["name"] for e in main["env"]}
        assert "ephemeral-storage" not in main["resources"]["limits"]
        assert "/extra" not in {m["mountPath"] for m in main["volumeMounts"]}
        assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
        routed = await _get(apiserver, f"{ROUTES}/custom")
        assert routed is not None
        assert _conds(routed).get("Degraded", ("", ""))[1] != "InvalidSpec", routed["status"]
    finally:
        await _stop(runner)


async def test_an_hpa_replica_count_and_a_restart_annotation_survive_a_reconcile(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, _route("held", replicas={"min": 1, "max": 8}))
        await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/held"), "deployment")
        # An HPA on the Deployment scales it; `kubectl rollout restart` stamps the template.
        await _send(apiserver, "PATCH", f"{DEPLOYMENTS}/held", {"spec": {"replicas": 5}})
        stamp = "2026-03-01T10:00:00Z"
        restart = {"spec": {"template": {"metadata": {"annotations": {RESTARTED: stamp}}}}}
        await _send(apiserver, "PATCH", f"{DEPLOYMENTS}/held", restart)
        await _handled(apiserver, "held", "one")
        # ...and a route change that rolls the pods keeps both too.
        await _send(
            apiserver, "PATCH", f"{ROUTES}/held", {"spec": {"lifecycle": {"drainSeconds": 45}}}
        )

        async def rolled() -> Any:
            dep = await _get(apiserver, f"{DEPLOYMENTS}/held")
            env = {e["name"]: e.get("value") for e in _main((dep or {})["spec"]["template"])["env"]}
            return dep if env.get("GEARSHIFT_SLM_GRACE_PERIOD_S") == "45" else None

        dep = await _eventually(rolled, "new drain")
        assert dep["spec"]["replicas"] == 5
        assert dep["spec"]["template"]["metadata"]["annotations"][RESTARTED] == stamp

        # The route's own scale subresource still moves the Deployment (kubectl scale mr).
        await _send(apiserver, "PATCH", f"{ROUTES}/held", {"spec": {"replicas": {"desired": 3}}})

        async def scaled() -> Any:
            dep = await _get(apiserver, f"{DEPLOYMENTS}/held")
            return dep if dep and dep["spec"]["replicas"] == 3 else None

        dep = await _eventually(scaled, "route scale reaches the Deployment")
        assert dep["spec"]["template"]["metadata"]["annotations"][RESTARTED] == stamp
    finally:
        await _stop(runner)


async def _reconciled_events(api: ApiServer, name: str) -> list[str]:
    async with api.get(f"/api/v1/namespaces/{NS}/events") as resp:
        items = (await resp.json()).get("items", [])
    return [
        e.get("message", "")
        for e in items
        if e.get("reason") == "Reconciled" and e.get("involvedObject", {}).get("name") == name
    ]


async def test_two_reconciles_of_an_unchanged_route_make_one_write(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    # Quantities the API server stores in another spelling: 0.5 -> 500m, 1024Mi -> 1Gi.
    route = _route("steady", resources={"cpu": "0.5", "memory": "1024Mi"})
    route["spec"]["model"]["cacheSize"] = "1024Gi"
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _send(apiserver, "POST", ROUTES, route)
        await _eventually(lambda: _get(apiserver, f"{DEPLOYMENTS}/steady"), "deployment")
        await _handled(apiserver, "steady", "first")
        events = await _reconciled_events(apiserver, "steady")
        writes = {p: apiserver.writes_to(p, "steady") for p in ("deployments", "services")}
        assert writes == {"deployments": ["POST"], "services": ["POST"]}, writes

        await _handled(apiserver, "steady", "second")
        assert apiserver.writes_to("deployments", "steady") == ["POST"]
        assert apiserver.writes_to("services", "steady") == ["POST"]
        assert apiserver.writes_to("poddisruptionbudgets", "steady") == ["POST"]
        assert await _reconciled_events(apiserver, "steady") == events
    finally:
        await _stop(runner)
    # An operator restart (resume) of the unchanged route writes nothing either.
    runner = _runner()
    await asyncio.to_thread(runner.__enter__)
    try:
        await _handled(apiserver, "steady", "third")
        assert apiserver.writes_to("deployments", "steady") == ["POST"]
        assert await _reconciled_events(apiserver, "steady") == events
    finally:
        await _stop(runner)
