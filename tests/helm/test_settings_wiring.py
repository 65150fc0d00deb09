"""What the chart hands each service is what the service actually reads.

Every `GEARSHIFT_<SERVICE>_*` env var the chart renders must name a field of that
service's real settings class, and the rendered values must pass its validation; the
size-class file must parse with the operator's own model, and the proxy config with the
proxy's. A renamed setting on either side fails here, not in a cluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath

import pytest
import yaml
from pydantic_settings import BaseSettings

from gearshift.cli.registry import SERVICES, load_service
from gearshift.proxy.config import ProxyConfig
from gearshift_operator.settings import Settings as OperatorSettings
from gearshift_operator.settings import SizeClass
from tests.helm.chart import (
    VALUE_SETS,
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


def _settings_class(component: str) -> type[BaseSettings]:
    if component == "operator":
        return OperatorSettings
    cls: type[BaseSettings] = load_service(component).Settings
    return cls


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("GEARSHIFT_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


def _same(value: object, raw: str) -> bool:
    """Whether a parsed setting is the value the env var carried."""
    if isinstance(value, bool):
        return str(value).lower() == raw.lower()
    if isinstance(value, int | float):
        return float(value) == float(raw)
    return str(value) == raw


def _container(objs: list[Manifest], component: str) -> Manifest:
    dep = find(objs, "Deployment", component_name(component))
    container: Manifest = dep["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_rendered_setting_is_a_real_field_with_a_valid_value(value_set: str) -> None:
    objs = objects_of(value_set)
    checked = 0
    for dep in by_kind(objs, "Deployment"):
        component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        cls = _settings_class(component)
        prefix = f"GEARSHIFT_{component.upper()}_"
        container = dep["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for item in container["env"]:
            name = item["name"]
            if not name.startswith(prefix):
                continue
            field = name[len(prefix) :].lower()
            assert field in cls.model_fields, (
                f"{component}: the chart sets {name}, but {cls.__module__}.{cls.__name__} "
                f"has no field {field!r}"
            )
            # Secrets arrive through valueFrom; any text stands in for them here.
            env[name] = item.get("value", "postgresql://u@db:5432/cache")
        with _environment(env):
            settings = cls()
        for name, raw in env.items():
            field = name[len(prefix) :].lower()
            assert _same(getattr(settings, field), raw), (component, field, raw)
        checked += 1
    assert checked >= 3


def test_the_chart_starts_services_the_cli_knows() -> None:
    for dep in by_kind(objects_of("full-values.yaml"), "Deployment"):
        container = dep["spec"]["template"]["spec"]["containers"][0]
        component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "operator":
            assert container["command"] == ["python", "-m", "gearshift_operator"]
            __import__("gearshift_operator.__main__")
        else:
            assert container["args"] == ["serve", component]
            assert component in SERVICES


def test_services_listen_on_all_pod_addresses_and_export_traces() -> None:
    objs = objects_of("full-values.yaml")
    for component in ("router", "cache", "proxy"):
        env = env_of(_container(objs, component))
        prefix = f"GEARSHIFT_{component.upper()}_"
        assert env[prefix + "HOST"] == "0.0.0.0"
        assert env[prefix + "OTLP_ENDPOINT"] == "otel-collector.observability.svc:4317"
        assert env[prefix + "SERVICE_NAME"] == f"gearshift-{component}"
        assert env[prefix + "LOG_LEVEL"] == "DEBUG"
    default = env_of(_container(objects_of("default"), "router"))
    assert "GEARSHIFT_ROUTER_OTLP_ENDPOINT" not in default


def test_settings_are_rendered_generically() -> None:
    objs = objects(
        render(
            {
                "router": {
                    "settings": {
                        "cascade": True,
                        "large_share_cap": 0.25,
                        "request_timeout_s": 1000000,
                        "future_list": ["a", "b"],
                        "future_map": {"k": 1},
                        "cache_address": "elsewhere:1",
                        "grace_period_s": 12,
                        "unset_me": None,
                    }
                }
            }
        )
    )
    env = env_of(_container(objs, "router"))
    assert env["GEARSHIFT_ROUTER_CASCADE"] == "true"
    assert env["GEARSHIFT_ROUTER_LARGE_SHARE_CAP"] == "0.25"
    assert env["GEARSHIFT_ROUTER_REQUEST_TIMEOUT_S"] == "1000000"  # not 1e+06
    assert json.loads(env["GEARSHIFT_ROUTER_FUTURE_LIST"]) == ["a", "b"]
    assert json.loads(env["GEARSHIFT_ROUTER_FUTURE_MAP"]) == {"k": 1}
    assert env["GEARSHIFT_ROUTER_CACHE_ADDRESS"] == "elsewhere:1", "user settings win over wiring"
    assert "GEARSHIFT_ROUTER_UNSET_ME" not in env
    dep = find(objs, "Deployment", component_name("router"))
    # preStop pause 5 + drain 12 + room to exit 15
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 5 + 12 + 15


def test_router_is_wired_to_the_cache_the_cluster_and_its_keys() -> None:
    objs = objects_of("full-values.yaml")
    container = _container(objs, "router")
    env = env_of(container)
    cache_svc = find(objs, "Service", component_name("cache"))
    assert env["GEARSHIFT_ROUTER_CACHE_ADDRESS"] == (
        f"{cache_svc['metadata']['name']}:{cache_svc['spec']['ports'][0]['port']}"
    )
    assert env["GEARSHIFT_ROUTER_KUBERNETES"] == "true"
    keys_file = PurePosixPath(env["GEARSHIFT_ROUTER_API_KEYS_FILE"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {
        v["name"]: v
        for v in find(objs, "Deployment", component_name("router"))["spec"]["template"]["spec"][
            "volumes"
        ]
    }
    mount = mounts["api-keys"]
    assert mount["readOnly"] is True
    secret = volumes["api-keys"]["secret"]
    assert secret["secretName"] == "gearshift-api-keys"
    (item,) = secret["items"]
    assert keys_file == PurePosixPath(mount["mountPath"]) / item["path"]
    no_cache = env_of(_container(objects(render({"cache": {"enabled": False}})), "router"))
    assert "GEARSHIFT_ROUTER_CACHE_ADDRESS" not in no_cache


def test_cache_backends() -> None:
    inproc = objects_of("default")
    container = _container(inproc, "cache")
    env = env_of(container)
    assert env["GEARSHIFT_CACHE_BACKEND"] == "usearch"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[env["GEARSHIFT_CACHE_DATA_DIR"]] == "index"
    pvc = find(inproc, "PersistentVolumeClaim", component_name("cache"))
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    dep = find(inproc, "Deployment", component_name("cache"))
    assert dep["spec"]["strategy"]["type"] == "Recreate", "one writer per index volume"

    scratch = objects_of("no-networkpolicy-values.yaml")
    assert by_kind(scratch, "PersistentVolumeClaim") == []
    vols = {
        v["name"]: v
        for v in find(scratch, "Deployment", component_name("cache"))["spec"]["template"]["spec"][
            "volumes"
        ]
    }
    assert "emptyDir" in vols["index"]

    pg = objects_of("pgvector-values.yaml")
    container = _container(pg, "cache")
    items: dict[str, Manifest] = {e["name"]: e for e in container["env"]}
    assert items["GEARSHIFT_CACHE_BACKEND"]["value"] == "pgvector"
    assert items["GEARSHIFT_CACHE_POSTGRES_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "gearshift-pg",
        "key": "url",
    }
    assert "GEARSHIFT_CACHE_DATA_DIR" not in items
    assert by_kind(pg, "PersistentVolumeClaim") == []
    assert find(pg, "Deployment", component_name("cache"))["spec"]["replicas"] == 3


def test_proxy_replicas_share_rate_limits_only_with_a_store() -> None:
    full = _container(objects_of("full-values.yaml"), "proxy")
    items: dict[str, Manifest] = {e["name"]: e for e in full["env"]}
    assert items["GEARSHIFT_PROXY_RATE_LIMIT_POSTGRES_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "gearshift-pg",
        "key": "url",
    }
    values = ci_values("full-values.yaml")
    del values["proxy"]["rateLimitStore"]
    alone = "".join(render(values).values())
    assert "GEARSHIFT_PROXY_RATE_LIMIT_POSTGRES_URL" not in alone


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_size_classes_parse_with_the_operators_own_model(value_set: str) -> None:
    objs = objects_of(value_set)
    container = _container(objs, "operator")
    path = PurePosixPath(env_of(container)["GEARSHIFT_OPERATOR_SIZE_CLASSES"])
    mount = next(
        m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == path.parent
    )
    volume = next(
        v
        for v in find(objs, "Deployment", component_name("operator"))["spec"]["template"]["spec"][
            "volumes"
        ]
        if v["name"] == mount["name"]
    )
    cm = find(objs, "ConfigMap", volume["configMap"]["name"])
    table = yaml.safe_load(cm["data"][path.name])
    parsed = {name: SizeClass.model_validate(spec) for name, spec in table.items()}
    assert {"small", "medium", "large"} <= set(parsed)
    if value_set == "gpu-mig-values.yaml":
        assert parsed["small"].accelerator == "nvidia.com/mig-1g.10gb"
        assert parsed["large"].accelerator == "nvidia.com/gpu" and parsed["large"].gpu == 4
        assert parsed["xlarge"].gpu == 8


def test_operator_deploys_model_servers_from_the_gpu_image_on_the_chart_ports() -> None:
    objs = objects_of("default")
    env = env_of(_container(objs, "operator"))
    assert env["GEARSHIFT_OPERATOR_IMAGE"] == "ghcr.io/gearshift-dev/gearshift-gpu:0.1.0"
    assert env["GEARSHIFT_OPERATOR_GRPC_PORT"] == "50051"
    assert env["GEARSHIFT_OPERATOR_METRICS_PORT"] == "9090"
    assert env["GEARSHIFT_OPERATOR_NAMESPACE"] == "ai", "namespaced by default"
    # Model servers run as their own tokenless account, created by the chart.
    account = env["GEARSHIFT_OPERATOR_SERVICE_ACCOUNT"]
    assert account == "gs-gearshift-model-server"
    sa = [s for s in objs if s["kind"] == "ServiceAccount" and s["metadata"]["name"] == account]
    assert sa and sa[0]["automountServiceAccountToken"] is False
    # Cluster-wide, routes live in other namespaces: no account is assumed to exist there.
    cluster = env_of(_container(objects(render({"operator": {"clusterWide": True}})), "operator"))
    assert "GEARSHIFT_OPERATOR_SERVICE_ACCOUNT" not in cluster
    named = render(
        {"operator": {"clusterWide": True}, "modelServers": {"serviceAccount": {"name": "llm"}}}
    )
    assert (
        env_of(_container(objects(named), "operator"))["GEARSHIFT_OPERATOR_SERVICE_ACCOUNT"]
        == "llm"
    )
    # Settings of gRPC services do not leak into the operator, which is not one.
    assert "GEARSHIFT_OPERATOR_HOST" not in env


def test_proxy_config_and_upstream_keys() -> None:
    objs = objects_of("full-values.yaml")
    container = _container(objs, "proxy")
    env = env_of(container)
    config_path = PurePosixPath(env["GEARSHIFT_PROXY_CONFIG_FILE"])
    mounts = {m["name"]: PurePosixPath(m["mountPath"]) for m in container["volumeMounts"]}
    volumes = {
        v["name"]: v
        for v in find(objs, "Deployment", component_name("proxy"))["spec"]["template"]["spec"][
            "volumes"
        ]
    }
    assert mounts["config"] == config_path.parent
    cm = find(objs, "ConfigMap", volumes["config"]["configMap"]["name"])
    config = ProxyConfig.model_validate(yaml.safe_load(cm["data"][config_path.name]))
    key_files = {
        mounts["upstream-keys"] / item["path"]
        for source in volumes["upstream-keys"]["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    used = {PurePosixPath(u.api_key_file) for m in config.models for u in m.upstreams}
    assert used == key_files
    # The checksum rolls the pods when the config changes.
    before = find(objs, "Deployment", component_name("proxy"))["spec"]["template"]["metadata"][
        "annotations"
    ]["checksum/config"]
    changed = objects(
        render(
            {
                "proxy": {
                    "enabled": True,
                    "config": {
                        "models": [
                            {
                                "name": "m",
                                "upstreams": [
                                    {"name": "u", "base_url": "http://x/v1", "model": "m"}
                                ],
                            }
                        ]
                    },
                }
            }
        )
    )
    after = find(changed, "Deployment", component_name("proxy"))["spec"]["template"]["metadata"][
        "annotations"
    ]["checksum/config"]
    assert before != after
