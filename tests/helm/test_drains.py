"""Every serving Deployment pauses before SIGTERM and is given time to drain after it.

A rolling update deletes a pod: EndpointSlices, kube-proxy and the routers' endpoint
watches learn of it within a few seconds, while the kubelet sends SIGTERM at once unless
a preStop hook runs first. Without the pause, calls still arriving in those seconds hit
a draining (or gone) process. The kubelet counts the hook against the grace period, so
`terminationGracePeriodSeconds` must cover the pause plus the service's own drain
(`grace_period_s`), or the drain is cut short by SIGKILL.
"""

from __future__ import annotations

import pytest

from tests.helm.chart import (
    VALUE_SETS,
    Manifest,
    by_kind,
    component_name,
    env_of,
    find,
    objects,
    objects_of,
    render,
)

# The operator serves no traffic through its Service (health and metrics only), and its
# handover is the leader Lease, which a pause would only delay.
NO_TRAFFIC = {"operator"}


def _timing(dep: Manifest) -> tuple[int, float, int]:
    """(preStop sleep seconds, the service's drain seconds, terminationGracePeriodSeconds)."""
    component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    drain = float(env_of(container)[f"GEARSHIFT_{component.upper()}_GRACE_PERIOD_S"])
    return int(pre_stop), drain, int(pod["terminationGracePeriodSeconds"])


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_serving_deployment_pauses_then_drains_within_its_grace(value_set: str) -> None:
    serving = [
        dep
        for dep in by_kind(objects_of(value_set), "Deployment")
        if dep["metadata"]["labels"]["app.kubernetes.io/component"] not in NO_TRAFFIC
    ]
    assert serving
    for dep in serving:
        name = dep["metadata"]["name"]
        pre_stop, drain, grace = _timing(dep)
        assert pre_stop >= 1, f"{name}: no preStop pause before SIGTERM"
        # Room to exit after the drain's deadline, too (the drain cancels, then stops).
        assert grace >= pre_stop + drain + 5, (name, pre_stop, drain, grace)


def test_router_cache_proxy_and_retriever_pause_5_s_and_drain_30_s_by_default() -> None:
    # Between them every component is on, with the timings left at their defaults.
    full, retriever = objects_of("full-values.yaml"), objects_of("retriever-values.yaml")
    for component in ("router", "cache", "proxy", "retriever"):
        objs = retriever if component == "retriever" else full
        dep = find(objs, "Deployment", component_name(component))
        assert _timing(dep) == (5, 30.0, 5 + 30 + 15), component


def test_pause_and_drain_are_set_per_component() -> None:
    objs = objects(
        render(
            {
                "router": {"preStopSeconds": 12, "settings": {"grace_period_s": 300}},
                "cache": {"preStopSeconds": 0},
            }
        )
    )
    router = find(objs, "Deployment", component_name("router"))
    assert _timing(router) == (12, 300.0, 12 + 300 + 15)
    cache = find(objs, "Deployment", component_name("cache"))
    # 0 turns the pause off (the sleep action cannot be 0 s before Kubernetes 1.32).
    assert "lifecycle" not in cache["spec"]["template"]["spec"]["containers"][0]
    assert _timing(cache) == (0, 30.0, 30 + 15)


@pytest.mark.parametrize("bad", [-1, 301, "5"])
def test_a_bad_pause_is_refused_by_the_values_schema(bad: object) -> None:
    with pytest.raises(Exception, match="preStopSeconds"):
        render({"router": {"preStopSeconds": bad}})
