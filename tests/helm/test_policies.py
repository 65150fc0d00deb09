"""Security defaults, NetworkPolicies, Services, probes and PDBs of the rendered chart."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from gearshift.routes.model_route import ModelRoute
from gearshift_operator import children
from gearshift_operator.settings import Settings as OperatorSettings
from tests.helm.chart import (
    EXAMPLES_DIR,
    NAMESPACE,
    VALUE_SETS,
    Manifest,
    by_kind,
    component_name,
    containers,
    env_of,
    find,
    matches,
    objects,
    objects_of,
    pod_spec,
    render,
    workloads,
)
from tests.helm.netpol import Pod, allowed

GRPC_SERVICES = {"router": 50051, "cache": 50052, "proxy": 50054}


def _pod_spec(workload: Manifest) -> Manifest:
    return pod_spec(workload)


# --- security by default -----------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_and_container_is_locked_down(value_set: str) -> None:
    deployments = workloads(objects_of(value_set))
    assert len(deployments) >= 3
    assert any(w["kind"] == "Pod" for w in deployments), "the helm test pod is checked too"
    for workload in deployments:
        where = workload["metadata"]["name"]
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key), f"{where}: {key}"
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert not any("hostPath" in v for v in volumes.values()), where
        for container in containers(pod):
            ctx = container["securityContext"]
            cwhere = f"{where}/{container['name']}"
            assert ctx["runAsNonRoot"] is True, cwhere
            assert ctx["runAsUser"] != 0, cwhere
            assert ctx["readOnlyRootFilesystem"] is True, cwhere
            assert ctx["allowPrivilegeEscalation"] is False, cwhere
            assert ctx.get("privileged", False) is False, cwhere
            assert ctx["capabilities"]["drop"] == ["ALL"], cwhere
            assert not ctx["capabilities"].get("add"), cwhere
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, cwhere
            # A read-only root filesystem needs somewhere to write: /tmp on an emptyDir.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            missing = set(mounts.values()) - set(volumes)
            assert not missing, f"{cwhere} mounts undefined volumes {missing}"
            assert "emptyDir" in volumes[mounts["/tmp"]], cwhere
            assert env_of(container).get("HOME", "/tmp").startswith("/tmp"), cwhere
            assert "resources" in container and container["resources"].get("requests"), cwhere


def test_only_the_router_and_operator_get_an_api_token() -> None:
    objs = objects_of("full-values.yaml")
    tokens = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: _pod_spec(d).get(
            "automountServiceAccountToken"
        )
        for d in by_kind(objs, "Deployment")
    }
    assert tokens == {"router": True, "operator": True, "cache": False, "proxy": False}
    for sa in by_kind(objs, "ServiceAccount"):
        component = sa["metadata"]["labels"]["app.kubernetes.io/component"]
        assert sa["automountServiceAccountToken"] is (component in ("router", "operator"))


# --- RBAC ---------------------------------------------------------------------------------


def _rules(objs: list[Manifest], component: str) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for role in [*by_kind(objs, "ClusterRole"), *by_kind(objs, "Role")]:
        if role["metadata"]["labels"]["app.kubernetes.io/component"] != component:
            continue
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


# `update`: children are written whole (PUT with a resourceVersion) so removed fields go.
_CRUD = {"get", "list", "watch", "create", "update", "patch", "delete"}
_OPERATOR_RULES = {
    ("gearshift.dev", "modelroutes"): {"get", "list", "watch", "patch"},
    ("gearshift.dev", "modelroutes/status"): {"get", "patch"},
    ("gearshift.dev", "datasources"): {"get", "list", "watch", "patch"},
    ("gearshift.dev", "datasources/status"): {"get", "patch"},
    ("apps", "deployments"): _CRUD,
    ("", "services"): _CRUD,
    ("", "configmaps"): _CRUD,
    ("policy", "poddisruptionbudgets"): _CRUD,
    ("", "pods"): {"list", "watch"},  # the autoscaler reads pods from a watch cache
    ("batch", "jobs"): _CRUD,
    ("", "events"): {"create"},
}


_LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}


def test_operator_rbac_is_exactly_what_it_uses() -> None:
    # Namespaced by default: a Role in the release namespace, nothing cluster-scoped.
    objs = objects_of("default")
    rules = _rules(objs, "operator")
    assert rules == {**_OPERATOR_RULES, **_LEASE_RULES}
    assert not [
        r
        for kind in ("ClusterRole", "ClusterRoleBinding")
        for r in by_kind(objs, kind)
        if r["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    # Cluster-wide only on request, with what kopf needs at cluster scope on top.
    cluster = _rules(objects(render({"operator": {"clusterWide": True}})), "operator")
    assert cluster == {
        **_OPERATOR_RULES,
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("", "namespaces"): {"list", "watch"},
        **_LEASE_RULES,
    }
    # Never secrets: upstream keys reach proxies as mounted volumes, not through the API.
    assert not any(resource == "secrets" for _, resource in {**rules, **cluster})


def test_operator_rbac_follows_scope_and_leader_election() -> None:
    standalone = objects(render({"operator": {"leaderElection": {"enabled": False}}}))
    assert not any(group == "coordination.k8s.io" for group, _ in _rules(standalone, "operator"))
    env = env_of(
        _pod_spec(find(standalone, "Deployment", component_name("operator")))["containers"][0]
    )
    assert env["GEARSHIFT_OPERATOR_LEADER_ELECTION"] == "false"
    # Cluster-wide: the Lease is still only in the release namespace (a Role, not a
    # ClusterRole), named after the release's operator so two releases never share one.
    shared = objects(render({"operator": {"clusterWide": True}}))
    lease_role = find(shared, "Role", component_name("operator") + "-leader")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert lease_role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    container = _pod_spec(find(shared, "Deployment", component_name("operator")))["containers"][0]
    env = env_of(container)
    assert env["GEARSHIFT_OPERATOR_LEASE_NAME"] == component_name("operator")
    assert env["GEARSHIFT_OPERATOR_LEASE_NAMESPACE"] == NAMESPACE
    assert env["GEARSHIFT_OPERATOR_LEASE_DURATION_SECONDS"] == "15"
    assert env["GEARSHIFT_OPERATOR_RENEW_DEADLINE_SECONDS"] == "10"
    assert env["GEARSHIFT_OPERATOR_RETRY_PERIOD_SECONDS"] == "2"
    (pod_name,) = [e for e in container["env"] if e["name"] == "GEARSHIFT_OPERATOR_POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # What the chart passes is what the operator accepts (client-go's timing rules).
    OperatorSettings(
        **{k.removeprefix("GEARSHIFT_OPERATOR_").lower(): v for k, v in env.items() if v}
    )
    namespaced = objects(render({"operator": {"clusterWide": False, "replicas": 2}}))
    (role,) = [
        r
        for r in by_kind(namespaced, "Role")
        if r["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
        and not r["metadata"]["name"].endswith("-leader")
    ]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert not [
        r
        for r in by_kind(namespaced, "ClusterRole")
        if r["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ], "a namespaced operator needs no cluster-scoped permissions"
    binding = [
        b
        for b in by_kind(namespaced, "RoleBinding")
        if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding and binding[0]["subjects"][0]["name"] == component_name("operator")
    env = env_of(
        _pod_spec(find(namespaced, "Deployment", component_name("operator")))["containers"][0]
    )
    assert env["GEARSHIFT_OPERATOR_NAMESPACE"] == NAMESPACE
    router_env = env_of(
        _pod_spec(find(namespaced, "Deployment", component_name("router")))["containers"][0]
    )
    assert router_env["GEARSHIFT_ROUTER_WATCH_NAMESPACE"] == NAMESPACE


def test_router_may_only_read_routes_and_signal_demand() -> None:
    # patch only for the demand annotation that wakes a route scaled to zero.
    # list/watch EndpointSlices: the ready pods behind each route (per-pod routing).
    assert _rules(objects_of("default"), "router") == {
        ("gearshift.dev", "modelroutes"): {"get", "list", "watch", "patch"},
        ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
    }


def _admits(policy: Manifest, user: str, old: Manifest, new: Manifest) -> list[str]:
    """Messages of the policy's failed validations for one UPDATE (CEL, as the API server)."""
    import celpy

    env = celpy.Environment()

    def run(expression: str, activation: dict[str, Any]) -> Any:
        return env.program(env.compile(expression)).evaluate(activation)

    base: dict[str, Any] = {
        "object": celpy.json_to_cel(new),
        "oldObject": celpy.json_to_cel(old),
        "request": celpy.json_to_cel({"userInfo": {"username": user}}),
    }
    spec = policy["spec"]
    if not all(bool(run(c["expression"], base)) for c in spec["matchConditions"]):
        return []
    variables = {v["name"]: run(v["expression"], base) for v in spec["variables"]}
    activation = {
        **base,
        "variables": celpy.celtypes.MapType(
            {celpy.celtypes.StringType(k): v for k, v in variables.items()}
        ),
    }
    return [v["message"] for v in spec["validations"] if not bool(run(v["expression"], activation))]


def test_the_router_may_change_only_the_demand_annotation() -> None:
    objs = objects_of("default")
    (policy,) = by_kind(objs, "ValidatingAdmissionPolicy")
    (binding,) = by_kind(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    router = f"system:serviceaccount:{NAMESPACE}:{component_name('router')}"
    route = yaml.safe_load((EXAMPLES_DIR / "medium.yaml").read_text())
    route["metadata"]["annotations"] = {"team": "search"}
    woken = copy.deepcopy(route)
    woken["metadata"]["annotations"]["gearshift.dev/demand"] = "2026-12-02T07:00:00Z"
    assert _admits(policy, router, route, woken) == []
    again = copy.deepcopy(woken)
    again["metadata"]["annotations"]["gearshift.dev/demand"] = "2026-12-02T07:05:00Z"
    assert _admits(policy, router, woken, again) == []

    rescaled = copy.deepcopy(woken)
    rescaled["spec"]["replicas"]["max"] = 50
    assert _admits(policy, router, route, rescaled) == [
        "the router may not change a ModelRoute's spec"
    ]
    relabelled = copy.deepcopy(route)
    relabelled["metadata"]["labels"] = {"tier": "gold"}
    assert _admits(policy, router, route, relabelled)
    reannotated = copy.deepcopy(route)
    reannotated["metadata"]["annotations"]["team"] = "ads"
    assert _admits(policy, router, route, reannotated)
    dropped = copy.deepcopy(route)
    dropped["metadata"]["annotations"] = {}
    assert _admits(policy, router, route, dropped)
    # Everyone else (the operator, a person with kubectl) is not matched by the policy.
    assert _admits(policy, "system:serviceaccount:ai:someone", route, rescaled) == []

    off = objects(render({"router": {"rbac": {"wakeOnlyPolicy": False}}}))
    assert by_kind(off, "ValidatingAdmissionPolicy") == []


# --- NetworkPolicies ------------------------------------------------------------------------


def _pods(objs: list[Manifest]) -> dict[str, Pod]:
    pods = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: Pod(
            d["metadata"]["name"], NAMESPACE, d["spec"]["template"]["metadata"]["labels"]
        )
        for d in by_kind(objs, "Deployment")
    }
    # A model server exactly as the operator builds it for the small example route.
    route = ModelRoute.model_validate(
        {
            **yaml.safe_load((EXAMPLES_DIR / "small.yaml").read_text()),
            "metadata": {"name": "smollm2-small", "namespace": NAMESPACE},
        }
    )
    dep = children.deployment(route, OperatorSettings())
    pods["model-server"] = Pod(
        "smollm2-small", NAMESPACE, dep["spec"]["template"]["metadata"]["labels"]
    )
    (test_pod,) = by_kind(objs, "Pod")
    pods["helm-test"] = Pod(test_pod["metadata"]["name"], NAMESPACE, test_pod["metadata"]["labels"])
    pods["stranger"] = Pod("curl", "elsewhere", {"app": "curl"})
    pods["neighbour"] = Pod("other-app", NAMESPACE, {"app.kubernetes.io/name": "other"})
    pods["monitoring"] = Pod("prometheus", "monitoring", {"app": "prometheus"})
    pods["ingress"] = Pod("nginx", "ingress", {"app": "nginx"})
    return pods


def test_network_policies_isolate_backends_by_default() -> None:
    objs = objects_of("default")
    policies = by_kind(objs, "NetworkPolicy")
    pods = _pods(objs)

    def ok(src: str, dst: str, port: int) -> bool:
        return allowed(policies, pods[src], pods[dst], port)

    # Only the router is reachable from outside the release (gRPC and the OpenAI API).
    for outsider in ("stranger", "neighbour"):
        assert ok(outsider, "router", 50051) and ok(outsider, "router", 8080)
        assert not ok(outsider, "cache", 50052)
        assert not ok(outsider, "model-server", 50051)
        assert not ok(outsider, "operator", 8080)
        assert not ok(outsider, "router", 9090), "metrics are closed unless metricsFrom is set"
    # Backends only from the router; model servers also from the operator (load reports).
    assert ok("router", "cache", 50052)
    assert not ok("operator", "cache", 50052)
    assert ok("router", "model-server", 50051) and ok("operator", "model-server", 50051)
    assert not ok("cache", "model-server", 50051)
    assert not ok("router", "cache", 9999), "only the service port is open"


def test_network_policies_with_restricted_router_and_metrics_scraping() -> None:
    objs = objects_of("full-values.yaml")
    policies = by_kind(objs, "NetworkPolicy")
    pods = _pods(objs)

    def ok(src: str, dst: str, port: int) -> bool:
        return allowed(policies, pods[src], pods[dst], port)

    assert ok("ingress", "router", 8080) and ok("ingress", "router", 50051)
    assert not ok("stranger", "router", 8080)
    assert ok("helm-test", "router", 50051) and ok("helm-test", "router", 8080)
    assert not ok("helm-test", "cache", 50052)
    assert ok("router", "proxy", 50054) and not ok("stranger", "proxy", 50054)
    assert not ok("cache", "proxy", 50054)
    for target, port in (
        ("router", 9090),
        ("cache", 9090),
        ("proxy", 9090),
        ("operator", 9100),
        ("model-server", 9090),
    ):
        assert ok("monitoring", target, port), target
        assert not ok("stranger", target, port), target
    assert not ok("monitoring", "cache", 50052)


def test_network_policies_can_be_turned_off() -> None:
    assert by_kind(objects_of("no-networkpolicy-values.yaml"), "NetworkPolicy") == []


def test_each_policy_selects_exactly_its_component() -> None:
    objs = objects_of("full-values.yaml")
    pods = _pods(objs)
    for policy in by_kind(objs, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]["matchLabels"]
        picked = [name for name, pod in pods.items() if matches(selector, pod.labels)]
        picked = ["test" if name == "helm-test" else name for name in picked]
        assert picked == [policy["metadata"]["labels"]["app.kubernetes.io/component"]], policy


# --- Services, probes, PDBs ------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_services_and_pdbs_select_one_component_and_real_ports(value_set: str) -> None:
    objs = objects_of(value_set)
    deployments = by_kind(objs, "Deployment")
    for obj in [*by_kind(objs, "Service"), *by_kind(objs, "PodDisruptionBudget")]:
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        picked = [
            d for d in deployments if matches(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(picked) == 1, f"{obj['kind']}/{obj['metadata']['name']} picks {len(picked)}"
        if obj["kind"] == "Service":
            names = {
                p["name"] for c in containers(_pod_spec(picked[0])) for p in c.get("ports", [])
            }
            for port in obj["spec"]["ports"]:
                assert port["targetPort"] in names, (obj["metadata"]["name"], port)


def test_service_ports() -> None:
    objs = objects_of("full-values.yaml")
    ports = {
        s["metadata"]["name"]: {p["name"]: p["port"] for p in s["spec"]["ports"]}
        for s in by_kind(objs, "Service")
    }
    assert ports[component_name("router")] == {"grpc": 50051, "http": 8080}
    assert ports[component_name("cache")] == {"grpc": 50052}
    assert ports[component_name("proxy")] == {"grpc": 50054}
    assert find(objs, "Service", component_name("router"))["spec"]["type"] == "LoadBalancer"
    # Metrics never ride on the externally exposed Service.
    assert find(objs, "Service", component_name("router-metrics"))["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_grpc_services_are_probed_on_the_grpc_health_check(value_set: str) -> None:
    objs = objects_of(value_set)
    seen = set()
    for component, port in GRPC_SERVICES.items():
        try:
            dep = find(objs, "Deployment", component_name(component))
        except AssertionError:
            continue  # disabled in this value set
        seen.add(component)
        (container,) = _pod_spec(dep)["containers"]
        grpc_ports = [p["containerPort"] for p in container["ports"] if p["name"] == "grpc"]
        assert grpc_ports == [port]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, (component, probe)
        grace = float(env_of(container)[f"GEARSHIFT_{component.upper()}_GRACE_PERIOD_S"])
        assert _pod_spec(dep)["terminationGracePeriodSeconds"] > grace
    assert {"router", "cache"} <= seen


def test_operator_is_probed_on_kopf_liveness() -> None:
    dep = find(objects_of("default"), "Deployment", component_name("operator"))
    (container,) = _pod_spec(dep)["containers"]
    health = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    assert env_of(container)["GEARSHIFT_OPERATOR_LIVENESS_ENDPOINT"] == (
        f"http://0.0.0.0:{health}/healthz"
    )
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert dep["spec"]["strategy"]["type"] == "Recreate", "never two active kopf operators"


def test_pdbs() -> None:
    objs = objects_of("default")
    pdbs = {p["metadata"]["name"]: p["spec"] for p in by_kind(objs, "PodDisruptionBudget")}
    assert set(pdbs) == {component_name("router"), component_name("cache")}
    full = {
        p["metadata"]["name"]: p["spec"]
        for p in by_kind(objects_of("full-values.yaml"), "PodDisruptionBudget")
    }
    assert full[component_name("router")]["minAvailable"] == 2
    assert "maxUnavailable" not in full[component_name("router")]
