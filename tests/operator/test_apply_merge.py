"""The pieces of apply that converges, one by one: the emulator's storage semantics
(canonical quantities, PUT that replaces and refuses a stale resourceVersion, volume
validation) and the operator's three-way merge (removes what it no longer sets, keeps
what others set, compares quantities by value).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gearshift_operator import apply
from tests.operator.apiserver import ApiServer
from tests.operator.quantity import canonical
from tests.operator.test_operator import DEPLOYMENTS, NS, _get, _send

RESTARTED = "kubectl.kubernetes.io/restartedAt"


# --- the API server's storage form (the emulator must fail as a cluster would) ---------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("0.5", "500m"),
        ("1024Mi", "1Gi"),
        ("1000m", "1"),
        ("2000", "2k"),
        ("1500", "1500"),
        ("1.5Gi", "1536Mi"),
        ("1000Mi", "1000Mi"),
        ("0.5Ki", "512"),
        ("100m", "100m"),
        ("16Gi", "16Gi"),
        ("1e3", "1e3"),
        ("0Gi", "0"),
        (4, "4"),
    ],
)
def test_quantities_are_stored_in_canonical_form(given: Any, stored: str) -> None:
    assert canonical(given) == stored


def test_a_malformed_quantity_is_refused() -> None:
    with pytest.raises(ValueError):
        canonical("16 GB")


def _deployment(name: str, **pod: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "main", "image": "x", "resources": {"requests": {"cpu": "0.5"}}}
                    ],
                    **pod,
                },
            },
        },
    }


async def _put(api: ApiServer, path: str, body: Any) -> tuple[int, Any]:
    async with api.request("PUT", path, json=body) as resp:
        return resp.status, await resp.json()


async def test_put_replaces_and_refuses_a_stale_resource_version(apiserver: ApiServer) -> None:
    await _send(apiserver, "POST", DEPLOYMENTS, _deployment("d", nodeSelector={"a": "1"}))
    live = await _get(apiserver, f"{DEPLOYMENTS}/d")
    assert live is not None
    container = live["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "500m"  # stored canonically
    assert container["terminationMessagePath"] == "/dev/termination-log"  # a server default

    new = copy.deepcopy(live)
    new["spec"]["template"]["spec"]["nodeSelector"] = {"b": "2"}
    status, stored = await _put(apiserver, f"{DEPLOYMENTS}/d", new)
    assert status == 200, stored
    assert stored["spec"]["template"]["spec"]["nodeSelector"] == {"b": "2"}  # replaced
    assert stored["metadata"]["generation"] == 2
    assert stored["metadata"]["uid"] == live["metadata"]["uid"]

    status, refused = await _put(apiserver, f"{DEPLOYMENTS}/d", new)  # old resourceVersion
    assert status == 409, refused
    assert "the object has been modified" in refused["message"]

    same = await _get(apiserver, f"{DEPLOYMENTS}/d")
    assert same is not None
    status, _ = await _put(apiserver, f"{DEPLOYMENTS}/d", same)
    assert status == 200
    after = await _get(apiserver, f"{DEPLOYMENTS}/d")
    assert after is not None  # a no-op update writes nothing
    assert after["metadata"]["resourceVersion"] == same["metadata"]["resourceVersion"]


async def test_mounting_an_undeclared_volume_is_refused(apiserver: ApiServer) -> None:
    dep = _deployment("d")
    dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "gone", "mountPath": "/x"}
    ]
    async with apiserver.request("POST", DEPLOYMENTS, json=dep) as resp:
        assert resp.status == 422
        assert 'volumeMounts[0].name: Not found: "gone"' in (await resp.json())["message"]


# --- the three-way merge -----------------------------------------------------------------


def _child(pod: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "r", "namespace": NS, "labels": {"app": "r"}},
        "spec": {"replicas": replicas, "template": {"metadata": {}, "spec": pod}},
    }


def _stored(child: dict[str, Any]) -> dict[str, Any]:
    """`child` as created and then stored (canonical quantities, a default, a version)."""
    live = apply.for_create(child)
    live["metadata"]["resourceVersion"] = "7"
    pod = live["spec"]["template"]["spec"]
    for c in pod.get("containers", []):
        c["terminationMessagePath"] = "/dev/termination-log"
        for part in (c.get("resources") or {}).values():
            for k, v in part.items():
                part[k] = canonical(v)
    pod["dnsPolicy"] = "ClusterFirst"
    return live


def test_fields_no_longer_set_are_removed_and_others_kept() -> None:
    before = _child(
        {
            "initContainers": [{"name": "fetch-weights", "image": "x"}],
            "containers": [
                {"name": "slm", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
            ],
            "volumes": [{"name": "hf-token", "secret": {"secretName": "t"}}],
            "nodeSelector": {"old": "1"},
        }
    )
    live = _stored(before)
    live["spec"]["template"]["metadata"]["annotations"] = {RESTARTED: "2026-01-01T00:00:00Z"}
    after = _child(
        {
            "containers": [{"name": "slm", "env": [{"name": "B", "value": "3"}]}],
            "nodeSelector": {"new": "2"},
        }
    )
    new = apply.desired_object(after, live)
    pod = new["spec"]["template"]["spec"]
    assert "initContainers" not in pod and "volumes" not in pod
    assert pod["nodeSelector"] == {"new": "2"}
    assert pod["containers"][0]["env"] == [{"name": "B", "value": "3"}]
    assert pod["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    assert pod["dnsPolicy"] == "ClusterFirst"
    assert new["spec"]["template"]["metadata"]["annotations"] == {RESTARTED: "2026-01-01T00:00:00Z"}
    assert json.loads(new["metadata"]["annotations"][apply.LAST_APPLIED]) == apply.applied_config(
        after
    )


def test_an_unchanged_child_with_normalised_quantities_is_unchanged() -> None:
    child = _child(
        {
            "containers": [
                {"name": "slm", "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}}
            ]
        }
    )
    live = _stored(child)
    assert live["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "500m",
        "memory": "1Gi",
    }
    assert apply.desired_object(child, live) == live
    # A real change of the value is one: 0.5 -> 1 CPU.
    bigger = copy.deepcopy(child)
    bigger["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1"
    assert apply.desired_object(bigger, live) != live


def test_replicas_set_by_someone_else_stay_until_the_route_changes_them() -> None:
    live = _stored(_child({"containers": [{"name": "slm"}]}, replicas=1))
    live["spec"]["replicas"] = 5  # an HPA on the Deployment
    same = apply.desired_object(_child({"containers": [{"name": "slm"}]}, replicas=1), live)
    assert same["spec"]["replicas"] == 5
    moved = apply.desired_object(_child({"containers": [{"name": "slm"}]}, replicas=3), live)
    assert moved["spec"]["replicas"] == 3
