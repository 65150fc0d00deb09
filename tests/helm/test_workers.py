"""`<service>.settings.workers`: the setting reaches the service and the pod asks for the cores.

A pod running N workers needs N cores to use them; the chart raises the CPU request to
match (keeping a larger one), and refuses a multi-worker cache on the in-process index,
which one process owns.
"""

from __future__ import annotations

from typing import Any

import pytest
from helm_python.errors import HelmError

from tests.helm.chart import component_name, env_of, find, objects, objects_of, render

PROXY_CONFIG = {"models": [{"name": "m", "upstreams": []}]}


def _container(objs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    dep = find(objs, "Deployment", component_name(component))
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize(
    ("cpu", "workers", "expected"),
    [("500m", 3, "3"), ("1", 2, "2"), ("4", 2, "4"), ("2500m", 2, "2500m"), ("1", 1, "1")],
)
def test_cpu_request_covers_one_core_per_worker(cpu: str, workers: int, expected: str) -> None:
    values = {
        "router": {"settings": {"workers": workers}, "resources": {"requests": {"cpu": cpu}}},
        "proxy": {
            "enabled": True,
            "config": PROXY_CONFIG,
            "settings": {"workers": workers},
            "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}},
        },
    }
    objs = objects(render(values))
    for component in ("router", "proxy"):
        container = _container(objs, component)
        assert str(container["resources"]["requests"]["cpu"]) == expected, component
        assert env_of(container)[f"GEARSHIFT_{component.upper()}_WORKERS"] == str(workers)
    assert _container(objs, "proxy")["resources"]["requests"]["memory"] == "1Gi"


def test_ci_value_sets_render_workers_with_matching_requests() -> None:
    router = _container(objects_of("full-values.yaml"), "router")
    assert env_of(router)["GEARSHIFT_ROUTER_WORKERS"] == "2"
    assert str(router["resources"]["requests"]["cpu"]) == "2"
    cache = _container(objects_of("pgvector-values.yaml"), "cache")
    assert env_of(cache)["GEARSHIFT_CACHE_WORKERS"] == "2"
    assert str(cache["resources"]["requests"]["cpu"]) == "2"


def test_several_cache_workers_on_the_in_process_index_fail_the_render() -> None:
    with pytest.raises(HelmError, match=r"needs cache\.backend: pgvector"):
        render({"cache": {"settings": {"workers": 2}}})
