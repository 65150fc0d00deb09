"""Operator configuration: env vars `GEARSHIFT_OPERATOR_*` (pydantic-settings).

The size-class table is data the platform team owns (which GPU, which MIG slice, which
nodes), so it is a YAML/JSON document, given inline or as a file path, not code.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SIZE_CLASSES: dict[str, Any] = {
    "small": {
        "gpu": 1,
        "gpuResource": "nvidia.com/gpu",
        "migResource": "",
        "nodeSelector": {"gearshift.dev/gpu-class": "small"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "cpu": "4",
        "memory": "16Gi",
    },
    "medium": {
        "gpu": 1,
        "gpuResource": "nvidia.com/gpu",
        "migResource": "",
        "nodeSelector": {"gearshift.dev/gpu-class": "medium"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "cpu": "8",
        "memory": "32Gi",
    },
    "large": {
        "gpu": 4,
        "gpuResource": "nvidia.com/gpu",
        "migResource": "",
        "nodeSelector": {"gearshift.dev/gpu-class": "large"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "cpu": "32",
        "memory": "128Gi",
    },
}


class SizeClass(BaseModel):
    """What one replica of a size class gets."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    gpu: int = Field(1, ge=0, description="GPUs (or MIG slices) per replica.")
    gpu_resource: str = Field("nvidia.com/gpu", alias="gpuResource")
    mig_resource: str = Field(
        "", alias="migResource", description="MIG profile resource, e.g. nvidia.com/mig-1g.10gb."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    cpu: str = "4"
    memory: str = "16Gi"

    @property
    def accelerator(self) -> str:
        """The extended resource requested: the MIG profile when set, else the GPU."""
        return self.mig_resource or self.gpu_resource


class Settings(BaseSettings):
    """How the operator deploys and scales routes."""

    model_config = SettingsConfigDict(env_prefix="GEARSHIFT_OPERATOR_", extra="ignore")

    namespace: str = Field("", description="Namespace to watch; empty watches all (cluster-wide).")
    image: str = Field(
        "ghcr.io/gearshift-dev/gearshift:0.1.0", description="Model-server image (gearshift CLI)."
    )
    proxy_image: str = Field(
        "",
        description="Image of per-route proxies (upstream routes; a CPU image, no CUDA); "
        "empty uses `image`.",
    )
    image_pull_policy: str = Field("IfNotPresent", description="Pull policy of model servers.")
    size_classes: str = Field(
        "",
        description="Size-class table: a YAML/JSON mapping, or a path to a file holding one; "
        "empty uses the built-in table.",
    )
    grpc_port: int = Field(50051, ge=1, le=65535, description="Model servers' gRPC port.")
    metrics_port: int = Field(9090, ge=1, le=65535, description="Model servers' /metrics port.")
    drain_seconds: int = Field(
        30,
        ge=0,
        description="Time a stopping model server lets in-flight calls finish when its "
        "longest answer is unknown; otherwise added to that answer's time (queueing, prefill).",
    )
    floor_tokens_per_second: float = Field(
        10.0,
        gt=0,
        description="Slowest decode speed of one generation under load (tokens/s), for "
        "routes that declare no lifecycle.floorTokensPerSecond; sizes the default drain.",
    )
    max_drain_seconds: int = Field(
        3600,
        ge=1,
        description="Upper bound of a derived drain (an explicit lifecycle.drainSeconds is "
        "not bounded by it).",
    )
    grace_margin_seconds: int = Field(
        15, ge=1, description="terminationGracePeriodSeconds = preStop + drain + this margin."
    )
    image_rollout_concurrency: int = Field(
        1,
        ge=0,
        description="Routes that move to a new model-server image at the same time (a chart "
        "upgrade); the others keep their image until a slot frees. 0: all at once.",
    )
    image_rollout_retry_s: float = Field(
        30.0, gt=0, description="How often a route waiting for an image-rollout slot retries."
    )
    headless_services: bool = Field(
        True,
        description="Give each route a headless Service (clusterIP None): its DNS name "
        "resolves to every ready pod, so a router without EndpointSlice access still "
        "connects to each pod (round robin) instead of one pod behind a virtual IP.",
    )
    max_connection_age_s: float = Field(
        300.0,
        ge=0,
        description="Model servers close each client connection after about this long "
        "(gRPC GOAWAY), so routers re-resolve and spread over new replicas; 0: never.",
    )
    max_connection_age_grace_s: float = Field(
        0.0,
        ge=0,
        description="How long calls on an aged connection may still run; 0: until they end.",
    )
    autoscale_interval_s: float = Field(15.0, gt=0, description="Autoscaler period per route.")
    load_timeout_s: float = Field(2.0, gt=0, description="Deadline of one GetModelInfo call.")
    scale_up_max_factor: float = Field(
        2.0, ge=1.0, description="One step grows replicas by at most this factor..."
    )
    scale_up_min_step: int = Field(1, ge=1, description="...or by at least this many.")
    idle_seconds_before_zero: int = Field(
        600, ge=0, description="Idle time before a scaleToZero route drops to 0 replicas."
    )
    demand_annotation: str = Field(
        "gearshift.dev/demand",
        description="Annotation the router sets on a cold route (RFC 3339 time) to wake it.",
    )
    leader_election: bool = Field(
        True,
        description="Run kopf only while holding the Lease `lease_name` (replicas beyond one "
        "wait as standbys that make no writes); false runs standalone (one replica only).",
    )
    lease_name: str = Field("gearshift-operator", description="Name of the leader Lease.")
    lease_namespace: str = Field(
        "",
        description="Namespace of the leader Lease; empty uses `namespace`, else the pod's "
        "own namespace (in-cluster), else `default`.",
    )
    lease_duration_seconds: int = Field(
        15,
        ge=1,
        description="How long standbys wait, after the leader's last renewal they saw, "
        "before taking the Lease (how long the operator may be gone when its leader dies).",
    )
    renew_deadline_seconds: float = Field(
        10.0,
        gt=0,
        description="The leader stops (exit 1, the pod restarts as a standby) when it cannot "
        "renew the Lease for this long; below lease_duration_seconds.",
    )
    retry_period_seconds: float = Field(
        2.0, gt=0, description="How often the leader renews and standbys retry the Lease."
    )
    pod_name: str = Field(
        "",
        description="This replica's identity in the Lease (holderIdentity): the pod name; "
        "empty uses the host name plus a random suffix.",
    )
    scale_state_resolution_s: float = Field(
        60.0,
        gt=0,
        description="The autoscaler's memory (stabilisation window, idle time) is written to "
        "the route's status when it has moved on by more than this since the last write; a "
        "new leader reads it back rounded up, so after a restart it scales down at most this "
        "much late and never early.",
    )
    failed_start_limit: int = Field(
        3,
        ge=0,
        description="Container restarts (init and main, summed over the route's pods that "
        "are not Ready) after which the route is scaled to 0 replicas, releasing its GPUs "
        "(Degraded, BlockedByFailedLoad); 0: never.",
    )
    failed_start_backoff_s: float = Field(
        300.0, gt=0, description="Wait before a blocked route tries again; doubles per attempt..."
    )
    failed_start_backoff_max_s: float = Field(3600.0, gt=0, description="...up to this long.")
    failed_start_recheck_s: float = Field(
        15.0, gt=0, description="How often a blocked route checks whether its back-off ended."
    )
    weights_job_backoff_limit: int = Field(
        2, ge=0, description="Retries of a failed weights-staging Job pod before it fails."
    )
    weights_job_deadline_s: int = Field(
        7200, ge=60, description="Longest a weights-staging Job may run (a stuck download)."
    )
    liveness_endpoint: str = Field(
        "http://0.0.0.0:8080/healthz", description="kopf liveness probe URL; empty disables."
    )
    operator_metrics_port: int = Field(
        9100, ge=-1, le=65535, description="Operator's own /metrics port; -1 disables."
    )
    service_account: str = Field(
        "",
        description="Service account of model-server pods (no API token is mounted); empty "
        "uses the namespace's default account.",
    )
    retriever_endpoint: str = Field(
        "",
        description="host:port of the chart's retriever; DataSources with an empty "
        "spec.retriever.endpoint use it.",
    )
    datasource_interval_s: float = Field(
        30.0, gt=0, description="How often each DataSource's counts are re-read."
    )
    retriever_timeout_s: float = Field(
        2.0, gt=0, description="Deadline of one retriever Stats call."
    )
    retriever_api_key: str = Field(
        "",
        description="Key sent as `authorization: Bearer` to retrievers that check keys (a "
        "service key, tenant '*', in the retriever's api_keys_file); empty sends none.",
    )
    kube_qps: float = Field(
        20.0,
        ge=0,
        description="API calls per second the operator's own client makes on average (a "
        "token bucket, as client-go's QPS); 0: unbounded. kopf's watches are not counted.",
    )
    kube_burst: int = Field(
        30, ge=1, description="API calls the operator's client may make at once (the bucket)."
    )
    log_level: str = Field("INFO", description="Log level.")

    @model_validator(mode="after")
    def _lease_timings(self) -> Settings:
        """client-go's rule: the leader gives up before a standby may take over."""
        if self.leader_election and not (
            self.lease_duration_seconds
            > self.renew_deadline_seconds
            > 1.2 * self.retry_period_seconds  # retries are jittered by up to 20 %
        ):
            raise ValueError(
                "leader election needs lease_duration_seconds > renew_deadline_seconds > "
                f"1.2 x retry_period_seconds, got {self.lease_duration_seconds} / "
                f"{self.renew_deadline_seconds} / {self.retry_period_seconds}"
            )
        return self

    def size_class_table(self) -> dict[str, SizeClass]:
        """The parsed size-class table (validated; errors name the bad class)."""
        return _parse_table(self.size_classes)


@functools.lru_cache(maxsize=8)
def _parse_table(source: str) -> dict[str, SizeClass]:
    raw: Any
    if not source.strip():
        raw = DEFAULT_SIZE_CLASSES
    else:
        path = Path(source)
        text = path.read_text(encoding="utf-8") if "\n" not in source and path.is_file() else source
        raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ValueError(f"size_classes must be a mapping, got {json.dumps(raw)[:80]}")
    return {str(name): SizeClass.model_validate(spec) for name, spec in raw.items()}
