"""The manifests a route owns: GPU requests by size class, tolerations, engine args, probes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from gearshift.routes import ModelRoute, load_routes_file
from gearshift_operator import children
from gearshift_operator.settings import Settings

EXAMPLES = Path(__file__).parents[2] / "examples/modelroutes"


def _route(name: str) -> Any:
    return load_routes_file(EXAMPLES / f"{name}.yaml")[0]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.mark.parametrize(
    ("example", "gpus", "node_class"),
    [("small", "1", "small"), ("medium", "1", "medium"), ("large", "4", "large")],
)
def test_size_class_sets_gpu_requests_tolerations_and_nodes(
    example: str, gpus: str, node_class: str
) -> None:
    dep = children.deployment(_route(example), Settings())
    pod = dep["spec"]["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == gpus
    assert res["limits"]["nvidia.com/gpu"] == gpus
    assert pod["nodeSelector"] == {"gearshift.dev/gpu-class": node_class}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_mig_profile_and_custom_table_from_settings(tmp_path: Path) -> None:
    table = tmp_path / "classes.yaml"
    table.write_text(
        "small: {gpu: 1, migResource: nvidia.com/mig-1g.10gb, cpu: '2', memory: 8Gi,"
        " tolerations: [{key: mig, operator: Exists}]}\n"
    )
    dep = children.deployment(_route("small"), Settings(size_classes=str(table)))
    pod = dep["spec"]["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["requests"] == {"cpu": "2", "memory": "8Gi", "nvidia.com/mig-1g.10gb": "1"}
    assert "nodeSelector" not in pod
    assert pod["tolerations"] == [{"key": "mig", "operator": "Exists"}]


def test_route_tool_parser_reaches_the_slm_server() -> None:
    """capabilities.toolParser is the SLM server's tool_parser; without it none is set."""
    route = _route("small")
    container = children.deployment(route, Settings())["spec"]["template"]["spec"]["containers"][0]
    assert "GEARSHIFT_SLM_TOOL_PARSER" not in _env(container)
    route.spec.capabilities.tools = True
    route.spec.capabilities.tool_parser = "hermes"
    container = children.deployment(route, Settings())["spec"]["template"]["spec"]["containers"][0]
    assert _env(container)["GEARSHIFT_SLM_TOOL_PARSER"] == "hermes"


def test_engine_route_runs_serve_slm_with_engine_settings() -> None:
    settings = Settings(drain_seconds=40, grace_margin_seconds=20)
    dep = children.deployment(_route("small"), settings)
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["gearshift"]
    assert container["args"] == ["serve", "slm"]
    env = _env(container)
    assert env["GEARSHIFT_SLM_MODEL"] == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    assert env["GEARSHIFT_SLM_SERVED_MODEL_NAME"] == "smollm2-1.7b-instruct"
    assert env["GEARSHIFT_SLM_DTYPE"] == "bfloat16"
    assert env["GEARSHIFT_SLM_MAX_MODEL_LEN"] == "4096"
    # The longest answer (maxModelLen 4096 tokens at the default floor of 10 tokens/s)
    # plus drain_seconds: a 40 s drain would cut any answer past 40 s of decoding.
    assert env["GEARSHIFT_SLM_GRACE_PERIOD_S"] == str(410 + 40)
    assert json.loads(env["GEARSHIFT_SLM_EXTRA_ENGINE_ARGS"]) == {
        "enable_prefix_caching": True,
        "max_num_seqs": 64,
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 50051}
    assert pod["terminationGracePeriodSeconds"] == 5 + 450 + 20  # preStop + drain + margin
    assert dep["spec"]["replicas"] == 1
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "smollm2-small"
    assert labels["app.kubernetes.io/managed-by"] == "gearshift-operator"


def test_large_route_shards_over_its_gpus() -> None:
    env = _env(
        children.deployment(_route("large"), Settings())["spec"]["template"]["spec"]["containers"][
            0
        ]
    )
    assert env["GEARSHIFT_SLM_TENSOR_PARALLEL_SIZE"] == "4"
    assert env["GEARSHIFT_SLM_MODEL"] == "/weights/llama-3.1-70b-instruct"
    assert json.loads(env["GEARSHIFT_SLM_EXTRA_ENGINE_ARGS"]) == {}


def test_tensor_parallel_beyond_the_replicas_gpus_is_a_spec_error() -> None:
    route = _route("small")
    assert route.spec.engine is not None
    route.spec.engine.tensor_parallel_size = 2
    with pytest.raises(children.SpecError, match="tensorParallelSize"):
        children.deployment(route, Settings())


def test_upstream_route_runs_the_proxy_with_the_key_as_a_file() -> None:
    route = _route("provider")
    manifests = children.build_children(route, Settings())
    kinds = [m["kind"] for m in manifests]
    assert kinds == ["ConfigMap", "Service", "PodDisruptionBudget", "Deployment"]
    cm, dep = manifests[0], manifests[-1]
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["serve", "proxy"]
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    env = _env(container)
    assert env["GEARSHIFT_PROXY_CONFIG_FILE"] == "/etc/gearshift/proxy/config.yaml"
    assert not any("KEY" in name for name in env)  # the secret is never an env var
    secret = next(v for v in pod["volumes"] if v["name"] == "upstream-key")["secret"]
    assert secret["secretName"] == "provider-key"
    assert secret["items"] == [{"key": "api-key", "path": "api-key"}]
    config = cm["data"]["config.yaml"]
    assert "api_key_file: /var/run/secrets/gearshift/upstream/api-key" in config
    assert "base_url: https://api.example.com/v1" in config


def test_service_pdb_and_rolling_hash() -> None:
    route = _route("small")
    settings = Settings()
    svc = children.service(route, settings)
    assert svc["spec"]["selector"] == children.selector_labels(route)
    assert svc["spec"]["ports"][0]["port"] == 50051
    pdb = children.pod_disruption_budget(route)
    assert pdb["spec"]["maxUnavailable"] == 1
    before = children.deployment(route, settings)["spec"]["template"]["metadata"]["annotations"]
    assert route.spec.engine is not None
    route.spec.engine.max_model_len = 2048
    after = children.deployment(route, settings)["spec"]["template"]["metadata"]["annotations"]
    assert before[children.TEMPLATE_HASH] != after[children.TEMPLATE_HASH]
    assert children.endpoint(route, settings) == "smollm2-small.default.svc:50051"


def test_desired_replicas_are_clamped() -> None:
    route = _route("small")
    route.spec.replicas.desired = 3
    assert children.target_replicas(route) == 3
    route.spec.replicas.desired = None
    assert children.target_replicas(route) == 1


@pytest.mark.parametrize("example", ["small", "medium", "large", "provider"])
def test_children_are_valid_kubernetes_objects(example: str) -> None:
    """Strict validation against the Kubernetes 1.30 OpenAPI schemas (no unknown fields)."""
    for manifest in children.build_children(_route(example), Settings()):
        manifest["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "gearshift.dev/v1alpha1",
                "kind": "ModelRoute",
                "name": example,
                "uid": "00000000-0000-0000-0000-000000000000",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        kubernetes_validate.validate(manifest, "1.30", strict=True)


def test_model_servers_get_no_api_token() -> None:
    """Model servers never call the Kubernetes API; a mounted token would only be a risk."""
    for example in ("small", "provider"):
        dep = children.deployment(_route(example), Settings(service_account="gs-model-server"))
        pod = dep["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == "gs-model-server"


def test_size_classes_are_whatever_the_table_holds() -> None:
    """The CRD takes any class name; the operator's table decides (e.g. the chart's xlarge)."""
    route = _route("small")
    route.spec.size_class = "xlarge"
    with pytest.raises(
        children.SpecError, match=r"'xlarge' is not in .*known: large, medium, small"
    ):
        children.deployment(route, Settings())
    table = '{"xlarge": {"gpu": 8, "cpu": "64", "memory": "512Gi"}}'
    dep = children.deployment(route, Settings(size_classes=table))
    limits = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "8"


def test_proxies_run_the_cpu_image_and_engines_the_gpu_image() -> None:
    settings = Settings(image="reg/gearshift-gpu:1", proxy_image="reg/gearshift:1")
    engine = children.deployment(_route("small"), settings)
    proxy = children.deployment(_route("provider"), settings)
    assert engine["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/gearshift-gpu:1"
    assert proxy["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/gearshift:1"
    fallback = children.deployment(_route("provider"), Settings(image="reg/only:1"))
    assert fallback["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/only:1"


def test_lifecycle_is_sized_per_route() -> None:
    """Drain, preStop, startup budget, probe timeouts and rollout from spec.lifecycle."""
    default = children.deployment(_route("small"), Settings(drain_seconds=30))
    container = default["spec"]["template"]["spec"]["containers"][0]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert container["startupProbe"]["failureThreshold"] * 10 == 900
    assert {
        container[p]["timeoutSeconds"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    } == {5}
    assert default["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}

    route = _route("large")
    route.spec.lifecycle = ModelRoute.model_validate(
        {
            **route.to_dict(),
            "spec": {
                **route.to_dict()["spec"],
                "lifecycle": {
                    "drainSeconds": 600,
                    "preStopSeconds": 10,
                    "startupSeconds": 2705,
                    "probeTimeoutSeconds": 15,
                    "maxSurge": 0,
                },
            },
        }
    ).spec.lifecycle
    dep = children.deployment(route, Settings(grace_margin_seconds=15))
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert _env(container)["GEARSHIFT_SLM_GRACE_PERIOD_S"] == "600"
    assert pod["terminationGracePeriodSeconds"] == 10 + 600 + 15
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == 10
    assert container["startupProbe"]["failureThreshold"] == 271  # 2705 s in 10 s periods
    assert container["livenessProbe"]["timeoutSeconds"] == 15
    # No spare GPUs for a surge replica: roll in place, one at a time.
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_a_rollout_that_cannot_move_is_refused() -> None:
    doc = {**_route("small").to_dict()}
    doc["spec"]["lifecycle"] = {"maxSurge": 0, "maxUnavailable": 0}
    with pytest.raises(ValueError, match="cannot both be 0"):
        ModelRoute.model_validate(doc)


def _volumes_and_mounts(dep: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    return volumes, mounts


def test_weights_from_a_claim_are_mounted_read_only() -> None:
    dep = children.deployment(_route("large"), Settings())
    volumes, mounts = _volumes_and_mounts(dep)
    assert volumes["weights"]["persistentVolumeClaim"] == {
        "claimName": "llama-weights",
        "readOnly": True,
    }
    assert mounts["weights"] == {"name": "weights", "mountPath": "/weights", "readOnly": True}
    assert volumes["cache"]["emptyDir"] == {"sizeLimit": "64Gi"}  # bounded


def test_a_gated_hub_model_with_a_token_file_and_a_shared_cache() -> None:
    route = _route("small")
    doc = route.to_dict()
    doc["spec"]["model"].update(
        tokenSecretRef={"name": "hf", "key": "token"}, cacheClaim="hf-cache", cacheSize="200Gi"
    )
    dep = children.deployment(ModelRoute.model_validate(doc), Settings())
    volumes, mounts = _volumes_and_mounts(dep)
    env = _env(dep["spec"]["template"]["spec"]["containers"][0])
    assert env["HF_TOKEN_PATH"] == "/var/run/secrets/gearshift/hf/token"
    assert not [k for k in env if k == "HF_TOKEN"]  # never the token itself in env
    assert volumes["hf-token"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert mounts["hf-token"]["readOnly"] is True
    # Downloaded once per volume: the route's pods share the Hub cache claim.
    assert volumes["hf-cache"]["persistentVolumeClaim"] == {"claimName": "hf-cache"}
    assert mounts["hf-cache"]["mountPath"] == env["HF_HOME"]
    assert volumes["cache"]["emptyDir"] == {"sizeLimit": "200Gi"}


def test_pre_populated_weights_on_the_node() -> None:
    doc = _route("large").to_dict()
    doc["spec"]["model"] = {
        "source": "/models/llama-3.1-70b-instruct",
        "servedName": "llama",
        "nodePath": "/mnt/gpu-models",
    }
    dep = children.deployment(ModelRoute.model_validate(doc), Settings())
    volumes, mounts = _volumes_and_mounts(dep)
    assert volumes["node-models"]["hostPath"] == {"path": "/mnt/gpu-models", "type": "Directory"}
    assert mounts["node-models"] == {
        "name": "node-models",
        "mountPath": "/models",
        "readOnly": True,
    }
    env = _env(dep["spec"]["template"]["spec"]["containers"][0])
    assert env["GEARSHIFT_SLM_MODEL"] == "/models/llama-3.1-70b-instruct"


def _with_override(example: str, override: dict[str, Any]) -> ModelRoute:
    doc = _route(example).to_dict()
    doc["spec"]["podTemplate"] = override
    return ModelRoute.model_validate(doc)


def test_pod_template_override_is_merged_like_a_strategic_merge_patch() -> None:
    override = {
        "metadata": {
            "labels": {"team": "search"},
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        "spec": {
            "runtimeClassName": "nvidia",
            "priorityClassName": "inference-high",
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "nvidia.com/gpu.product",
                                        "operator": "In",
                                        "values": ["NVIDIA-L4"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {
                        "matchLabels": {"app.kubernetes.io/instance": "smollm2-small"}
                    },
                }
            ],
            "containers": [
                {
                    "name": "slm",
                    "env": [{"name": "VLLM_ATTENTION_BACKEND", "value": "FLASHINFER"}],
                    "volumeMounts": [{"name": "extra", "mountPath": "/extra", "readOnly": True}],
                }
            ],
            "volumes": [
                {"name": "extra", "configMap": {"name": "extra"}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
            ],
        },
    }
    dep = children.deployment(_with_override("small", override), Settings())
    template = dep["spec"]["template"]
    pod = template["spec"]
    assert pod["runtimeClassName"] == "nvidia" and pod["priorityClassName"] == "inference-high"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert template["metadata"]["labels"]["team"] == "search"
    assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == "smollm2-small"
    assert "gearshift.dev/template-hash" in template["metadata"]["annotations"]
    (container,) = pod["containers"]
    env = _env(container)
    assert env["VLLM_ATTENTION_BACKEND"] == "FLASHINFER"
    assert env["GEARSHIFT_SLM_MODEL"] == "HuggingFaceTB/SmolLM2-1.7B-Instruct"  # kept
    assert container["args"] == ["serve", "slm"]
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert {"extra", "cache", "dshm", "tmp"} <= mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}  # merged
    assert volumes["extra"]["configMap"] == {"name": "extra"}
    # A different override is a different template: the pods roll.
    plain = children.deployment(_route("small"), Settings())
    assert (
        plain["spec"]["template"]["metadata"]["annotations"]["gearshift.dev/template-hash"]
        != template["metadata"]["annotations"]["gearshift.dev/template-hash"]
    )
    kubernetes_validate.validate(dep, "1.30", strict=True)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"spec": {"containers": [{"name": "slm", "args": ["serve", "proxy"]}]}}, "args"),
        (
            {
                "spec": {
                    "containers": [
                        {"name": "slm", "env": [{"name": "GEARSHIFT_SLM_MODEL", "value": "x"}]}
                    ]
                }
            },
            "GEARSHIFT_SLM_MODEL",
        ),
        ({"metadata": {"labels": {"app.kubernetes.io/instance": "other"}}}, "labels"),
    ],
)
def test_pod_template_override_cannot_touch_what_the_operator_owns(
    override: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(children.SpecError, match=fragment):
        children.deployment(_with_override("small", override), Settings())


@pytest.mark.parametrize(("example", "service"), [("small", "slm"), ("provider", "proxy")])
def test_every_env_var_the_operator_sets_is_a_real_server_setting(
    example: str, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renamed setting fails here, not as an ignored env var in a cluster."""
    from gearshift.cli.registry import load_service

    pod = children.deployment(_route(example), Settings())["spec"]["template"]["spec"]
    prefix = f"GEARSHIFT_{service.upper()}_"
    env = {k: v for k, v in _env(pod["containers"][0]).items() if k.startswith(prefix)}
    fields = load_service(service).Settings.model_fields
    unknown = [k for k in env if k.removeprefix(prefix).lower() not in fields]
    assert not unknown
    assert env[f"{prefix}MAX_CONNECTION_AGE_S"] == "300"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_service(service).Settings()
    assert settings.max_connection_age_s == 300
