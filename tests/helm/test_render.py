"""The chart lints, renders with every value set, and every object is valid Kubernetes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from helm_python.chart import Chart, lint, package
from helm_python.errors import HelmError

from tests.helm.chart import (
    CHART_DIR,
    CRD_FILE,
    EXAMPLES_DIR,
    NAMESPACE,
    RELEASE,
    REPO,
    VALUE_SETS,
    by_kind,
    ci_values,
    component_name,
    find,
    objects,
    objects_of,
    render,
    render_set,
)

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ["1.30.0", "1.33.0"]
# Kinds that come from CRDs, not Kubernetes itself; checked against their CRDs below.
CUSTOM_KINDS = {"ServiceMonitor"}
WARNING = 2


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_is_clean(value_set: str) -> None:
    """`helm lint --strict` (warnings are errors) finds nothing above INFO."""
    report = lint(CHART_DIR, ci_values(value_set), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert report["errors"] == [] and problems == [], report


def test_app_version_is_the_package_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    with Chart.load(CHART_DIR) as chart:
        meta = chart.metadata
    assert meta["appVersion"] == project["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", meta["version"]), meta["version"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_is_well_formed_and_unique(value_set: str) -> None:
    objs = objects_of(value_set)
    assert objs, "the chart rendered nothing"
    seen = set()
    for obj in objs:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in seen, f"duplicate object {key}"
        seen.add(key)
        assert len(meta["name"]) <= 63, meta["name"]
        labels = meta.get("labels", {})
        for label in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert label in labels, f"{obj['kind']}/{meta['name']} lacks label {label}"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_objects_validate_against_kubernetes_schemas(value_set: str, kube_version: str) -> None:
    """Strict validation: unknown fields and wrong types fail, as `kubectl apply` would."""
    checked = 0
    for obj in objects_of(value_set):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= 10


def test_the_crd_is_a_valid_kubernetes_object() -> None:
    doc = yaml.safe_load(CRD_FILE.read_text())
    kubernetes_validate.validate(doc, "1.33.0", strict=True)
    assert doc["metadata"]["name"] == "modelroutes.gearshift.dev"
    with Chart.load(CHART_DIR) as chart:
        # Nothing in crds/: Helm would install it once and never upgrade it (the CRDs are
        # templates, tests/helm/test_crd_upgrade.py).
        assert chart.crds == []
    datasource = yaml.safe_load((CRD_FILE.parent / "datasource.yaml").read_text())
    kubernetes_validate.validate(datasource, "1.33.0", strict=True)
    assert datasource["metadata"]["name"] == "datasources.gearshift.dev"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_operator_adds_no_cluster_scoped_object_and_no_hook(value_set: str) -> None:
    """HA is a Lease in the release namespace: no kopf peering CRD, no peering object, no
    hook re-creating one on every upgrade. Cluster-scoped operator objects are only the
    ClusterRoles (and bindings) that watching every namespace needs."""
    objs = objects_of(value_set)
    assert not [o for o in objs if o["apiVersion"].startswith("kopf.dev/")]
    assert all(
        c["spec"]["group"] == "gearshift.dev" for c in by_kind(objs, "CustomResourceDefinition")
    )
    operator = [
        o
        for o in objs
        if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "operator"
    ]
    assert operator
    assert not [o for o in operator if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    cluster_scoped = {
        o["kind"]
        for o in operator
        if "namespace" not in o["metadata"] and o["kind"] != "CustomResourceDefinition"
    }
    cluster_wide = bool(ci_values(value_set).get("operator", {}).get("clusterWide"))
    assert cluster_scoped == ({"ClusterRole", "ClusterRoleBinding"} if cluster_wide else set())
    (lease_role,) = [
        o for o in by_kind(operator, "Role") if o["metadata"]["name"].endswith("-leader")
    ]
    assert lease_role["metadata"]["namespace"] == NAMESPACE


def test_service_monitor_selects_the_metrics_services() -> None:
    objs = objects_of("full-values.yaml")
    monitor = find(objs, "ServiceMonitor", "gs-gearshift")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    picked = [
        s["metadata"]["name"]
        for s in by_kind(objs, "Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]
    assert sorted(picked) == sorted(
        component_name(f"{c}-metrics") for c in ("router", "cache", "proxy", "operator")
    )
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    assert ports == {"metrics"}
    for name in picked:
        svc = find(objs, "Service", name)
        assert [p["name"] for p in svc["spec"]["ports"]] == ["metrics"]


def test_service_monitor_selects_the_model_server_services() -> None:
    """The operator's per-route Services are scraped too (the dashboard's SLM panels)."""
    from gearshift.routes.model_route import ModelRoute
    from gearshift_operator import children
    from gearshift_operator.settings import Settings as OperatorSettings

    objs = objects_of("full-values.yaml")  # cluster-wide
    monitor = find(objs, "ServiceMonitor", "gs-gearshift-model-servers")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    selector = monitor["spec"]["selector"]["matchLabels"]
    for example in ("small", "provider"):
        doc = yaml.safe_load((EXAMPLES_DIR / f"{example}.yaml").read_text())
        service = children.service(ModelRoute.model_validate(doc), OperatorSettings())
        assert all(service["metadata"]["labels"].get(k) == v for k, v in selector.items())
        assert "metrics" in [p["name"] for p in service["spec"]["ports"]]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    # Nothing else in the release carries the operator's managed-by label.
    assert not [
        s
        for s in by_kind(objs, "Service")
        if s["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "gearshift-operator"
    ]
    namespaced = objects(render({"metrics": {"serviceMonitor": {"enabled": True}}}))
    monitor = find(namespaced, "ServiceMonitor", "gs-gearshift-model-servers")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_service_monitor_is_off_by_default() -> None:
    assert by_kind(objects_of("default"), "ServiceMonitor") == []


def test_image_tag_defaults_to_app_version_and_can_be_overridden() -> None:
    images = {
        c["image"]
        for d in by_kind(objects_of("default"), "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"ghcr.io/gearshift-dev/gearshift:0.1.0"}
    objs = objects(render({"image": {"tag": "9.9.9"}, "cache": {"image": {"tag": "1.2.3"}}}))
    by_name = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in by_kind(objs, "Deployment")
    }
    assert by_name[component_name("router")].endswith(":9.9.9")
    assert by_name[component_name("cache")].endswith(":1.2.3")
    operator_env = {
        e["name"]: e.get("value")
        for e in find(objs, "Deployment", component_name("operator"))["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert operator_env["GEARSHIFT_OPERATOR_IMAGE"] == "ghcr.io/gearshift-dev/gearshift-gpu:9.9.9"
    # Per-route proxies run the CPU image, not the GPU one.
    assert operator_env["GEARSHIFT_OPERATOR_PROXY_IMAGE"] == "ghcr.io/gearshift-dev/gearshift:9.9.9"


def test_notes_tell_how_to_reach_the_router() -> None:
    notes = render_set("default")["gearshift/templates/NOTES.txt"]
    assert f"{component_name('router')}.{NAMESPACE}.svc:50051" in notes
    assert "port-forward" in notes
    assert "router.apiKeys.existingSecret is empty" in notes
    assert (
        "router.apiKeys.existingSecret is empty"
        not in render_set("full-values.yaml")["gearshift/templates/NOTES.txt"]
    )


def test_notes_warn_when_proxy_replicas_do_not_share_rate_limits() -> None:
    warning = "each replica\nenforces rate_limits on its own"
    assert warning not in render_set("default")["gearshift/templates/NOTES.txt"]  # no proxy
    assert warning not in render_set("full-values.yaml")["gearshift/templates/NOTES.txt"]
    values = ci_values("full-values.yaml")
    del values["proxy"]["rateLimitStore"]
    assert warning in render(values)["gearshift/templates/NOTES.txt"]


def test_router_ingress_and_autoscaling() -> None:
    objs = objects_of("full-values.yaml")
    router = find(objs, "Deployment", component_name("router"))
    assert "replicas" not in router["spec"], "the HPA owns the replica count"
    (hpa,) = [
        h
        for h in by_kind(objs, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == component_name("router")
    ]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    (ingress,) = by_kind(objs, "Ingress")
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = find(objs, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    assert by_kind(objects_of("default"), "Ingress") == []
    assert by_kind(objects_of("default"), "HorizontalPodAutoscaler") == []


def test_inverted_autoscaling_bounds_fail_the_render() -> None:
    with pytest.raises(HelmError, match="minReplicas \\(5\\) must not exceed maxReplicas \\(2\\)"):
        render(
            {
                "proxy": {
                    "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
                    "enabled": True,
                    "config": {"models": [{"name": "m", "upstreams": []}]},
                }
            }
        )


def test_packaged_chart_keeps_crd_and_schema_and_renders_the_same(tmp_path: Path) -> None:
    """`helm package` output (what users install from a repository) is complete."""
    archive = package(CHART_DIR, destination=tmp_path)
    with Chart.load(archive) as packed:
        assert packed.metadata["appVersion"] == "0.1.0"
        assert packed.crds == []
        assert sorted(f["name"] for f in packed.files if f["name"].startswith("files/crds/")) == [
            "files/crds/datasource.yaml",
            "files/crds/modelroutes.gearshift.dev.yaml",
        ]
        assert packed.schema is not None
        assert not any(f["name"].startswith("ci/") for f in packed.files)
        assert packed.render(values={}, name=RELEASE, namespace=NAMESPACE) == render_set("default")
