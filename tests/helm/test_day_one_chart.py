"""Chart knobs a GPU platform team needs on day one: every image pinned by digest,
opt-in egress policies, headless route Services and a bounded gRPC connection age.
Every ci/*.yaml set (locked-down-values.yaml included) also goes through the strict
lint and Kubernetes-schema tests in test_render.py.
"""

from __future__ import annotations

from typing import Any

from tests.helm.chart import (
    Manifest,
    by_kind,
    ci_values,
    component_name,
    env_of,
    find,
    objects,
    objects_of,
    render,
)

LOCKED = "locked-down-values.yaml"


def _pod_specs(objs: list[Manifest]) -> list[Manifest]:
    specs = []
    for o in objs:
        spec = o.get("spec") or {}
        if o["kind"] == "Pod":
            specs.append(spec)
        elif o["kind"] == "CronJob":
            specs.append(spec["jobTemplate"]["spec"]["template"]["spec"])
        elif "template" in spec:
            specs.append(spec["template"]["spec"])
    return specs


def _env(objs: list[Manifest], component: str) -> dict[str, str]:
    deployment = find(objs, "Deployment", component_name(component))
    return env_of(deployment["spec"]["template"]["spec"]["containers"][0])


def _operator_env(objs: list[Manifest]) -> dict[str, str]:
    return _env(objs, "operator")


def test_every_image_is_pinned_by_digest() -> None:
    objs = objects_of(LOCKED)
    images = [
        c["image"]
        for spec in _pod_specs(objs)
        for c in [*spec.get("initContainers", []), *spec["containers"]]
    ]
    assert len(images) >= 6  # router, cache, retriever, operator, CronJob, test pod
    assert all("@sha256:" in i and ":0.1.0" not in i for i in images), images
    cache = find(objs, "Deployment", component_name("cache"))
    assert cache["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        "@sha256:" + "3" * 64
    )
    env = _operator_env(objs)
    # What the operator deploys: the GPU image for engines, the CPU image for proxies.
    assert (
        env["GEARSHIFT_OPERATOR_IMAGE"] == "ghcr.io/gearshift-dev/gearshift-gpu@sha256:" + "2" * 64
    )
    assert (
        env["GEARSHIFT_OPERATOR_PROXY_IMAGE"]
        == "ghcr.io/gearshift-dev/gearshift@sha256:" + "1" * 64
    )


def _egress(objs: list[Manifest], name: str) -> list[dict[str, Any]]:
    policy = find(objs, "NetworkPolicy", f"{component_name(name)}-egress")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    rules: list[dict[str, Any]] = policy["spec"]["egress"]
    return rules


def _ports(rule: dict[str, Any]) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def test_egress_is_opt_in_and_each_pod_reaches_only_what_it_calls() -> None:
    default = objects_of("default")
    assert not [
        p for p in by_kind(default, "NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]
    ]

    objs = objects_of(LOCKED)
    for component in ("router", "cache", "retriever", "operator", "model-server"):
        rules = _egress(objs, component)
        assert _ports(rules[0]) == {53}  # DNS first, on UDP and TCP
        assert {p["protocol"] for p in rules[0]["ports"]} == {"UDP", "TCP"}
        assert any(_ports(r) == {4317} for r in rules)  # extraTo: the OTLP collector

    cache = _egress(objs, "cache")
    assert [(_ports(r), r.get("to")) for r in cache[2:]] == [
        ({5432}, [{"ipBlock": {"cidr": "10.20.0.0/16"}}])
    ]
    router = _egress(objs, "router")
    cache_rule = next(r for r in router if _ports(r) == {50052})
    assert (
        cache_rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "cache"
    )
    model_rule = next(r for r in router if _ports(r) == {50051})
    assert model_rule["to"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gearshift-model-server"}}}
    ]
    assert any(
        r.get("to") == [{"ipBlock": {"cidr": "10.0.0.1/32"}}] and _ports(r) == {443} for r in router
    )
    operator = _egress(objs, "operator")
    assert any(_ports(r) == {50051, 9090} for r in operator)  # load reports + metrics
    # Model servers: no Hub downloads when every route loads local weights.
    servers = _egress(objs, "model-server")
    assert [_ports(r) for r in servers[2:]] == [{443}]  # upstream providers (route proxies)

    opened = objects(render({**ci_values(LOCKED), "networkPolicy": {"egress": {"enabled": True}}}))
    servers = _egress(opened, "model-server")
    download = servers[1]
    assert _ports(download) == {443} and "to" not in download  # the Hub, any address


def test_route_services_are_headless_and_connections_age() -> None:
    env = _operator_env(objects_of("default"))
    assert env["GEARSHIFT_OPERATOR_HEADLESS_SERVICES"] == "true"
    assert env["GEARSHIFT_OPERATOR_MAX_CONNECTION_AGE_S"] == "300"
    router = _env(objects_of("default"), "router")
    assert router["GEARSHIFT_ROUTER_MAX_CONNECTION_AGE_S"] == "300"
    # The cold hold is derived per route (startupSeconds + margin) unless a release sets one.
    assert "GEARSHIFT_ROUTER_COLD_START_WAIT_S" not in router
    fixed = _env(objects(render({"router": {"settings": {"cold_start_wait_s": 600}}})), "router")
    assert fixed["GEARSHIFT_ROUTER_COLD_START_WAIT_S"] == "600"
    locked = _operator_env(objects_of(LOCKED))
    assert locked["GEARSHIFT_OPERATOR_MAX_CONNECTION_AGE_S"] == "600"
    assert locked["GEARSHIFT_OPERATOR_MAX_CONNECTION_AGE_GRACE_S"] == "900"
    virtual = _operator_env(objects(render({"modelServers": {"headlessService": False}})))
    assert virtual["GEARSHIFT_OPERATOR_HEADLESS_SERVICES"] == "false"
