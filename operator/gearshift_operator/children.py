"""Pure functions: a `ModelRoute` plus operator settings -> the manifests it owns.

No API calls here, so what the operator deploys is unit-testable line by line, and a
reconcile is "build these, then make the cluster match them" (idempotent by design).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from gearshift.routes.model_route import ModelRoute, hf_source
from gearshift_operator import pod_override
from gearshift_operator.drain import drain_seconds
from gearshift_operator.settings import Settings, SizeClass

MANAGED_BY = "gearshift-operator"
APP_NAME = "gearshift-model-server"
ROUTE_LABEL = "gearshift.dev/route"
TEMPLATE_HASH = "gearshift.dev/template-hash"
PROXY_CONFIG_DIR = "/etc/gearshift/proxy"
SECRET_DIR = "/var/run/secrets/gearshift/upstream"

Manifest = dict[str, Any]


class SpecError(ValueError):
    """The route cannot be deployed as written (e.g. an unknown size class)."""


def component(route: ModelRoute) -> str:
    """`slm` for engine routes, `proxy` for upstream routes."""
    return "slm" if route.spec.engine is not None else "proxy"


def selector_labels(route: ModelRoute) -> dict[str, str]:
    """The labels that pick the route's pods (Deployment/Service/PDB selectors)."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": route.name}


def selector_string(route: ModelRoute) -> str:
    """`selector_labels` as a label-selector string (status.selector, scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(route).items()))


def labels(route: ModelRoute) -> dict[str, str]:
    """Recommended app.kubernetes.io labels plus the route's name."""
    return {
        **selector_labels(route),
        "app.kubernetes.io/component": component(route),
        "app.kubernetes.io/part-of": "gearshift",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        ROUTE_LABEL: route.name,
    }


def endpoint(route: ModelRoute, settings: Settings) -> str:
    """The gRPC address the router uses: the explicit one, else the route's Service."""
    if route.spec.routing.endpoint:
        return route.spec.routing.endpoint
    return f"{route.name}.{route.namespace}.svc:{settings.grpc_port}"


def target_replicas(route: ModelRoute) -> int:
    """spec.replicas.desired (the scale subresource) clamped to [min, max]; else min."""
    r = route.spec.replicas
    desired = r.min if r.desired is None else r.desired
    return max(r.min, min(r.max, desired))


def engine_env_args(extra_args: list[str]) -> dict[str, Any]:
    """`["--max-num-seqs=64", "--enable-prefix-caching"]` -> vLLM engine kwargs.

    The SLM server takes further engine args as a JSON object (GEARSHIFT_SLM_EXTRA_ENGINE_ARGS);
    the CRD takes CLI-style strings because that is what vLLM users know.
    """
    result: dict[str, Any] = {}
    i = 0
    while i < len(extra_args):
        item = extra_args[i]
        if not item.startswith("--") or len(item) <= 2:
            raise SpecError(f"engine.extraArgs[{i}]: expected --flag or --flag=value, got {item!r}")
        key, sep, raw = item[2:].partition("=")
        value: Any = True
        if sep:
            value = yaml.safe_load(raw) if raw else ""
        elif i + 1 < len(extra_args) and not extra_args[i + 1].startswith("--"):
            value = yaml.safe_load(extra_args[i + 1])
            i += 1
        result[key.replace("-", "_")] = value
        i += 1
    return result


HF_TOKEN_DIR = "/var/run/secrets/gearshift/hf"
WEIGHTS_DIR = "/weights"
NODE_MODELS_DIR = "/models"
DEFAULT_CACHE_SIZE = "64Gi"


IMAGE_PREFIX = "image://"
FETCH_CONTAINER = "fetch-weights"


def image_source(source: str) -> tuple[str, str]:
    """`image://REF//sub/dir` -> (REF, "sub/dir"); the folder part is optional."""
    reference, _sep, folder = source.removeprefix(IMAGE_PREFIX).partition("//")
    return reference, folder


def _model_source(source: str) -> str:
    """What the engine loads: a Hub id for hf://, the mounted path for pvc:// and image://."""
    if source.startswith("hf://"):
        return hf_source(source)[0]
    if source.startswith("pvc://"):
        _claim, _sep, path = source.removeprefix("pvc://").partition("/")
        return f"{WEIGHTS_DIR}/{path}".rstrip("/")
    if source.startswith(IMAGE_PREFIX):
        return f"{WEIGHTS_DIR}/{image_source(source)[1]}".rstrip("/")
    return source


def _model_volumes(route: ModelRoute) -> list[tuple[Manifest, Manifest]]:
    """(volume, mount) pairs that deliver the weights: a claim, a node path, a shared cache."""
    model = route.spec.model
    pairs: list[tuple[Manifest, Manifest]] = []
    if model.source.startswith("pvc://"):
        claim = model.source.removeprefix("pvc://").partition("/")[0]
        pairs.append(
            (
                {
                    "name": "weights",
                    "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
                },
                {"name": "weights", "mountPath": WEIGHTS_DIR, "readOnly": True},
            )
        )
    if model.source.startswith(IMAGE_PREFIX):
        # An OCI image holding the weights, pulled once per node by the kubelet and
        # mounted read-only (Kubernetes image volumes: the ImageVolume feature).
        pairs.append(
            (
                {
                    "name": "weights",
                    "image": {
                        "reference": image_source(model.source)[0],
                        "pullPolicy": "IfNotPresent",
                    },
                },
                {"name": "weights", "mountPath": WEIGHTS_DIR, "readOnly": True},
            )
        )
    if model.node_path:
        pairs.append(
            (
                {"name": "node-models", "hostPath": {"path": model.node_path, "type": "Directory"}},
                {"name": "node-models", "mountPath": NODE_MODELS_DIR, "readOnly": True},
            )
        )
    if model.cache_claim:
        # One download per volume: every pod of the route shares the Hub cache.
        pairs.append(
            (
                {"name": "hf-cache", "persistentVolumeClaim": {"claimName": model.cache_claim}},
                {"name": "hf-cache", "mountPath": "/cache/hf"},
            )
        )
    if model.token_secret_ref is not None:
        ref = model.token_secret_ref
        pairs.append(
            (
                {
                    "name": "hf-token",
                    "secret": {
                        "secretName": ref.name,
                        "items": [{"key": ref.key, "path": "token"}],
                        "defaultMode": 0o440,
                    },
                },
                {"name": "hf-token", "mountPath": HF_TOKEN_DIR, "readOnly": True},
            )
        )
    return pairs


def _size_class(route: ModelRoute, settings: Settings) -> SizeClass | None:
    if route.spec.size_class is None:
        return None
    table = settings.size_class_table()
    if route.spec.size_class not in table:
        raise SpecError(
            f"sizeClass {route.spec.size_class!r} is not in the operator's size-class table "
            f"(known: {', '.join(sorted(table))})"
        )
    return table[route.spec.size_class]


def _resources(route: ModelRoute, settings: Settings) -> tuple[dict[str, Any], SizeClass | None]:
    size = _size_class(route, settings)
    override = route.spec.resources
    cpu: str | int = size.cpu if size else ("4" if route.spec.engine else "500m")
    memory: str | int = size.memory if size else ("16Gi" if route.spec.engine else "512Mi")
    gpu = size.gpu if size else 0
    gpu_resource = size.accelerator if size else "nvidia.com/gpu"
    if override is not None:
        cpu = override.cpu if override.cpu is not None else cpu
        memory = override.memory if override.memory is not None else memory
        gpu = override.gpu if override.gpu is not None else gpu
        gpu_resource = override.gpu_resource or gpu_resource
    engine = route.spec.engine
    if engine is not None and gpu and engine.tensor_parallel_size > gpu:
        raise SpecError(
            f"engine.tensorParallelSize {engine.tensor_parallel_size} exceeds the {gpu} GPU(s) "
            "of one replica"
        )
    requests: dict[str, Any] = {"cpu": str(cpu), "memory": str(memory)}
    limits: dict[str, Any] = {"memory": str(memory)}
    if gpu:
        # Extended resources: request must equal limit.
        requests[gpu_resource] = str(gpu)
        limits[gpu_resource] = str(gpu)
    return {"requests": requests, "limits": limits}, size


def _env(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs.items()]


def proxy_config(route: ModelRoute) -> dict[str, Any]:
    """The proxy's config file for an upstream route (one model, one upstream)."""
    upstream = route.spec.upstream
    assert upstream is not None
    entry: dict[str, Any] = {
        "name": "upstream",
        "base_url": upstream.base_url,
        "model": upstream.model,
    }
    if upstream.secret_ref is not None:
        entry["api_key_file"] = f"{SECRET_DIR}/api-key"
    return {"models": [{"name": route.served_name, "upstreams": [entry]}]}


def config_map(route: ModelRoute) -> Manifest | None:
    """The proxy config for upstream routes; None for engine routes."""
    if route.spec.upstream is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": route.name, "namespace": route.namespace, "labels": labels(route)},
        "data": {"config.yaml": yaml.safe_dump(proxy_config(route), sort_keys=True)},
    }


def _probes(route: ModelRoute, settings: Settings) -> Manifest:
    """gRPC health probes; the startup probe's budget is the route's model-loading time."""
    life = route.spec.lifecycle
    grpc_probe = {
        "grpc": {"port": settings.grpc_port},
        "timeoutSeconds": life.probe_timeout_seconds,
    }
    return {
        # Model loading can take many minutes: the startup probe holds liveness off until then.
        "startupProbe": {
            **grpc_probe,
            "periodSeconds": 10,
            "failureThreshold": max(1, -(-life.startup_seconds // 10)),
        },
        "readinessProbe": {**grpc_probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**grpc_probe, "periodSeconds": 10, "failureThreshold": 3},
    }


def _container(route: ModelRoute, settings: Settings, resources: dict[str, Any]) -> Manifest:
    common = {
        "HOST": "0.0.0.0",
        "GRPC_PORT": str(settings.grpc_port),
        "METRICS_PORT": str(settings.metrics_port),
        "GRACE_PERIOD_S": str(drain_seconds(route, settings)),
        "SERVICE_NAME": f"gearshift-{component(route)}-{route.name}",
        # Routers' HTTP/2 connections are renewed now and then, so new replicas get calls.
        "MAX_CONNECTION_AGE_S": f"{settings.max_connection_age_s:g}",
        "MAX_CONNECTION_AGE_GRACE_S": f"{settings.max_connection_age_grace_s:g}",
    }
    volume_mounts: list[dict[str, Any]] = []
    engine = route.spec.engine
    if engine is not None:
        specific = {
            "MODEL": _model_source(route.spec.model.source),
            "SERVED_MODEL_NAME": route.served_name,
            "DTYPE": engine.dtype,
            "TENSOR_PARALLEL_SIZE": str(engine.tensor_parallel_size),
            "GPU_MEMORY_UTILIZATION": str(engine.gpu_memory_utilization),
            "EXTRA_ENGINE_ARGS": json.dumps(_engine_args(route), sort_keys=True),
        }
        if engine.max_model_len is not None:
            specific["MAX_MODEL_LEN"] = str(engine.max_model_len)
        if route.spec.capabilities.tool_parser:
            specific["TOOL_PARSER"] = route.spec.capabilities.tool_parser
        env = _env({f"GEARSHIFT_SLM_{k}": v for k, v in {**common, **specific}.items()})
        env += _hub_env(route)
        if route.spec.model.source.startswith("hf://"):
            # The fetch-weights init container has downloaded it: the engine never does.
            env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
        volume_mounts += [
            {"name": "cache", "mountPath": "/cache"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ]
        volume_mounts += [mount for _volume, mount in _model_volumes(route)]
    else:
        specific = {"CONFIG_FILE": f"{PROXY_CONFIG_DIR}/config.yaml"}
        env = _env({f"GEARSHIFT_PROXY_{k}": v for k, v in {**common, **specific}.items()})
        volume_mounts.append({"name": "config", "mountPath": PROXY_CONFIG_DIR, "readOnly": True})
        upstream = route.spec.upstream
        if upstream is not None and upstream.secret_ref is not None:
            volume_mounts.append(
                {"name": "upstream-key", "mountPath": SECRET_DIR, "readOnly": True}
            )
    volume_mounts.append({"name": "tmp", "mountPath": "/tmp"})
    pre_stop = route.spec.lifecycle.pre_stop_seconds
    container: Manifest = {
        "name": component(route),
        # Proxies need no CUDA: a multi-GB GPU image would only slow their start.
        "image": settings.image if engine is not None else settings.proxy_image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["gearshift"],
        "args": ["serve", component(route)],
        "env": env,
        "ports": [
            {"name": "grpc", "containerPort": settings.grpc_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": settings.metrics_port, "protocol": "TCP"},
        ],
        "resources": resources,
        **_probes(route, settings),
        "volumeMounts": volume_mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
    }
    if pre_stop:
        # Routers and Services drop the replica before it is told to stop.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": pre_stop}}}
    return container


def _engine_args(route: ModelRoute) -> dict[str, Any]:
    """extraArgs as engine kwargs, plus the pinned revision of an hf://org/name@rev source
    (the engine runs offline: it must look up the same revision the fetch stored)."""
    assert route.spec.engine is not None
    args = engine_env_args(route.spec.engine.extra_args)
    source = route.spec.model.source
    revision = hf_source(source)[1] if source.startswith("hf://") else None
    if revision is not None:
        args.update(revision=revision, tokenizer_revision=revision)
    return args


def _hub_env(route: ModelRoute) -> list[dict[str, str]]:
    """Where huggingface_hub keeps its cache and finds the token; $HOME on the cache volume."""
    env = [{"name": "HF_HOME", "value": "/cache/hf"}]
    if route.spec.model.token_secret_ref is not None:
        # huggingface_hub reads the token from this file: never an env var.
        env.append({"name": "HF_TOKEN_PATH", "value": f"{HF_TOKEN_DIR}/token"})
    # The root filesystem is read-only: vLLM, torch and Triton write under $HOME.
    env.append({"name": "HOME", "value": "/cache"})
    return env


def cache_limit(route: ModelRoute) -> str | None:
    """The largest model the route's cache takes: cacheSize, else the emptyDir default.

    None with a cache claim and no cacheSize: the claim's own capacity bounds it.
    """
    model = route.spec.model
    if model.cache_size is not None:
        return str(model.cache_size)
    return None if model.cache_claim else DEFAULT_CACHE_SIZE


def fetch_container(route: ModelRoute, settings: Settings, main: Manifest) -> Manifest | None:
    """The init container that downloads an hf:// model before the engine starts.

    Separate from the engine so a download failure (gated model without a token, a
    model larger than the cache) is reported as Init:Error with a plain message, the
    engine starts offline, and a shared cacheClaim is filled once for every pod.
    """
    source = route.spec.model.source
    if route.spec.engine is None or not source.startswith("hf://"):
        return None
    repo, revision = hf_source(source)
    args = ["-m", "gearshift.models.fetch", repo]
    if revision is not None:
        args += ["--revision", revision]
    limit = cache_limit(route)
    if limit is not None:
        args += ["--max-size", limit]
    mounts = [
        m for m in main["volumeMounts"] if m["name"] in ("cache", "hf-cache", "hf-token", "tmp")
    ]
    return {
        "name": FETCH_CONTAINER,
        "image": main["image"],
        "imagePullPolicy": main["imagePullPolicy"],
        "command": ["python"],
        "args": args,
        "env": _hub_env(route),
        "volumeMounts": mounts,
        # Network and disk bound; no GPU. The memory limit bounds a runaway client.
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"memory": "2Gi"},
        },
        "securityContext": dict(main["securityContext"]),
        # The fetch's last log lines (wrong repo, gated model, too large) become the
        # container's termination message, which route status quotes.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _volumes(route: ModelRoute) -> list[Manifest]:
    tmp: Manifest = {"name": "tmp", "emptyDir": {}}
    if route.spec.engine is not None:
        size = route.spec.model.cache_size or DEFAULT_CACHE_SIZE
        return [
            # Bounded: a runaway download gets the pod evicted, not the node's disk filled.
            {"name": "cache", "emptyDir": {"sizeLimit": str(size)}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            tmp,
            *(volume for volume, _mount in _model_volumes(route)),
        ]
    volumes: list[Manifest] = [{"name": "config", "configMap": {"name": route.name}}, tmp]
    upstream = route.spec.upstream
    if upstream is not None and upstream.secret_ref is not None:
        ref = upstream.secret_ref
        volumes.append(
            {
                "name": "upstream-key",
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": ref.key, "path": "api-key"}],
                    "defaultMode": 0o440,
                },
            }
        )
    return volumes


def template_hash(template: Manifest, extra: Manifest | None = None) -> str:
    """A short digest of the pod template (and the proxy config), to roll on any change."""
    blob = json.dumps([template, extra], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def deployment(route: ModelRoute, settings: Settings, replicas: int | None = None) -> Manifest:
    """The model-server Deployment: GPU requests, gRPC probes, drain-aware termination."""
    resources, size = _resources(route, settings)
    main = _container(route, settings, resources)
    pod_spec: Manifest = {
        "containers": [main],
        "volumes": _volumes(route),
        "terminationGracePeriodSeconds": route.spec.lifecycle.pre_stop_seconds
        + drain_seconds(route, settings)
        + settings.grace_margin_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,
        # Model servers never call the Kubernetes API: no token in the pod.
        "automountServiceAccountToken": False,
    }
    fetch = fetch_container(route, settings, main)
    if fetch is not None:
        pod_spec["initContainers"] = [fetch]
    if size is not None:
        if size.node_selector:
            pod_spec["nodeSelector"] = dict(size.node_selector)
        if size.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in size.tolerations]
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    template: Manifest = {
        "metadata": {
            "labels": labels(route),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(settings.metrics_port),
            },
        },
        "spec": pod_spec,
    }
    try:
        template = pod_override.apply(template, route.spec.pod_template, component(route))
    except pod_override.OverrideError as err:
        raise SpecError(str(err)) from err
    cm = config_map(route)
    template.setdefault("metadata", {}).setdefault("annotations", {})
    template["metadata"]["annotations"][TEMPLATE_HASH] = template_hash(template, cm)
    surge, unavailable = route.spec.lifecycle.rollout()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": route.name, "namespace": route.namespace, "labels": labels(route)},
        "spec": {
            "replicas": target_replicas(route) if replicas is None else replicas,
            "selector": {"matchLabels": selector_labels(route)},
            # Surge one by default (the route never goes dark); maxSurge 0 rolls in place
            # when there are no spare GPUs for an extra replica.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
            },
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 1800,
            "template": template,
        },
    }


def service(route: ModelRoute, settings: Settings) -> Manifest:
    """The Service in front of the route's gRPC port; headless unless configured otherwise.

    Headless (clusterIP None): the DNS name returns every ready pod, so a client doing
    round robin over DNS (the router's channels do) reaches each replica. With a virtual
    IP it would hold one connection to one pod.
    """
    spec: Manifest = {"type": "ClusterIP"}
    if settings.headless_services:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": route.name, "namespace": route.namespace, "labels": labels(route)},
        "spec": {
            **spec,
            "selector": selector_labels(route),
            "ports": [
                {
                    "name": "grpc",
                    "port": settings.grpc_port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {"name": "metrics", "port": settings.metrics_port, "targetPort": "metrics"},
            ],
        },
    }


def pod_disruption_budget(route: ModelRoute) -> Manifest:
    """At most one replica evicted at a time; unhealthy pods may always be evicted."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": route.name, "namespace": route.namespace, "labels": labels(route)},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(route)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def build_children(
    route: ModelRoute, settings: Settings, replicas: int | None = None
) -> list[Manifest]:
    """Everything the route owns, in apply order; empty for explicit-endpoint routes.

    The Deployment comes last: it is what holds GPUs, so a child the API server refuses
    (a name taken by another object, an admission policy) stops the apply before any GPU
    is requested for a route that cannot serve.
    """
    if route.spec.backend == "external":
        return []
    children: list[Manifest] = []
    cm = config_map(route)
    if cm is not None:
        children.append(cm)
    children += [
        service(route, settings),
        pod_disruption_budget(route),
        deployment(route, settings, replicas),
    ]
    return children
