"""A typed model of the `ModelRoute` custom resource (gearshift.dev/v1alpha1).

One definition serves both sides: the router reads routes from a local YAML file or from
cluster objects with it, and the operator reconciles them with it. The cross-field rules
below mirror the CRD's CEL rules
(`helm/gearshift/files/crds/modelroutes.gearshift.dev.yaml`), so a local routes file is held
to the same contract as `kubectl apply`.

Field names are snake_case in Python and camelCase on the wire (`servedName`,
`maxModelLen`, ...); both spellings are accepted on input. Unknown fields are ignored so
that an older router can read objects written for a newer CRD version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "gearshift.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelRoute"
# Set by the router (an RFC 3339 time) when traffic wants a route that is scaled to zero;
# the operator then scales it from 0 to 1 replica.
DEMAND_ANNOTATION = "gearshift.dev/demand"
PLURAL = "modelroutes"

Tier = Literal["slm", "llm"]
# A name in the operator's size-class table (which the platform team extends), not an enum.
SIZE_CLASS_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
ScaleMetric = Literal["waitingRequests", "kvCacheUsage", "tokensPerSecond"]
ConditionType = Literal[
    "Ready", "Progressing", "Degraded", "FallbackResolved", "PodsHealthy", "WeightsStaged"
]
# Route names become Service and Deployment names: a DNS-1035 label (the CRD's pattern).
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# A Kubernetes resource quantity ("500m", "16Gi", "1.5"), non-negative (the CRD's pattern).
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY = rf"^\+?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"
# Engine settings the operator derives from the spec: extraArgs may not set them, or a
# route could serve other weights under its name (the CRD's extraArgs rule lists the same).
OPERATOR_ENGINE_FLAGS = (
    "model",
    "served-model-name",
    "dtype",
    "max-model-len",
    "tensor-parallel-size",
    "gpu-memory-utilization",
)
# vLLM accepts --max-model-len and --max_model_len alike.
OPERATOR_FLAG_PATTERN = (
    "^--(" + "|".join(flag.replace("-", "[-_]") for flag in OPERATOR_ENGINE_FLAGS) + ")(=.*)?$"
)


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown keys ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=False
    )


class SecretKeyRef(_Model):
    """A key in a Secret in the route's namespace."""

    name: str = Field(..., min_length=1)
    key: str = Field(..., min_length=1)


MODEL_SOURCE = (
    r"^$|^(hf://[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(@[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?"
    r"|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^/].*)?"
    r"|image://[a-z0-9][A-Za-z0-9._:@-]*(/[a-z0-9][A-Za-z0-9._:@-]*)*(//[^/].*)?|/.*)$"
)


HF_PREFIX = "hf://"


def hf_source(source: str) -> tuple[str, str | None]:
    """`hf://org/name@revision` -> ("org/name", "revision"); no `@`: (repo, None).

    A pinned revision (a commit, tag or branch) is what every replica loads, and what the
    cache marker is keyed by, so one revision is downloaded once per cache claim.
    """
    repo, sep, revision = source.removeprefix(HF_PREFIX).partition("@")
    return repo, (revision if sep else None)


class ModelRef(_Model):
    """Which weights to serve, how they reach the pod, and the name clients ask for."""

    source: str = Field(
        "",
        pattern=MODEL_SOURCE,
        max_length=512,
        description="hf://org/name[@revision], pvc://claim/path, image://REF[//folder], or an "
        "absolute path in the pod.",
    )
    served_name: str = Field(
        ..., min_length=1, description="Model name clients and the router use."
    )
    token_secret_ref: SecretKeyRef | None = None
    cache_claim: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    cache_size: str | int | None = None
    node_path: str | None = Field(None, pattern=r"^/.*$", max_length=512)

    @field_validator("cache_size")
    @classmethod
    def _quantity(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int) and value < 0:
            raise ValueError("must not be negative")
        if isinstance(value, str) and not re.match(QUANTITY, value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 64Gi)")
        return value

    @model_validator(mode="after")
    def _delivery(self) -> ModelRef:
        # Same rules, same messages, as the CRD's CEL rules on spec.model.
        hf = self.source.startswith("hf://")
        if self.token_secret_ref is not None and not hf:
            raise ValueError("model.tokenSecretRef applies to hf:// sources only")
        if self.cache_claim is not None and not hf:
            raise ValueError("model.cacheClaim applies to hf:// sources only")
        if self.node_path is not None and not self.source.startswith("/models/"):
            raise ValueError("model.nodePath needs a source under /models/ (where it is mounted)")
        return self


class Resources(_Model):
    """Explicit per-replica resources; any field set here overrides the size class."""

    gpu: int | None = Field(None, ge=0, description="GPUs (or MIG slices) per replica.")
    gpu_resource: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        max_length=253,
        description="Extended resource name, nvidia.com/gpu.",
    )
    cpu: str | int | None = Field(None, description="CPU request/limit, a Kubernetes quantity.")
    memory: str | int | None = Field(
        None, description="Memory request/limit, a Kubernetes quantity."
    )

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str | int | None) -> str | int | None:
        # The API server would reject the Deployment; say so before anything is deployed.
        if isinstance(value, int) and value < 0:
            raise ValueError("must not be negative")
        if isinstance(value, str) and not re.match(QUANTITY, value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)")
        return value


class Engine(_Model):
    """vLLM settings for a self-hosted route (`gearshift serve slm`)."""

    dtype: Dtype = "auto"
    max_model_len: int | None = Field(None, ge=16)
    tensor_parallel_size: int = Field(1, ge=1, le=16)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    extra_args: list[str] = Field(default_factory=list)

    @field_validator("extra_args")
    @classmethod
    def _not_operator_flags(cls, args: list[str]) -> list[str]:
        for arg in args:
            if re.match(OPERATOR_FLAG_PATTERN, arg):
                raise ValueError(
                    f"engine.extraArgs may not set {arg.partition('=')[0]}: the operator sets it "
                    "from the spec (model.source, model.servedName, engine.*)"
                )
        return args


class Upstream(_Model):
    """An external OpenAI-compatible provider (`gearshift serve proxy`)."""

    base_url: str = Field(..., min_length=1)
    model: str = Field(..., min_length=1, description="The provider's model name.")
    secret_ref: SecretKeyRef | None = None


class DifficultyBand(_Model):
    """The band of difficulty scores (0 easy .. 1 hard) a route accepts."""

    min: float = Field(0.0, ge=0.0, le=1.0)
    max: float = Field(1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> DifficultyBand:
        if self.min > self.max:
            raise ValueError("difficulty.min must be <= difficulty.max")
        return self


class Routing(_Model):
    """How the router picks this route."""

    difficulty: DifficultyBand = Field(default_factory=lambda: DifficultyBand.model_validate({}))
    weight: int = Field(1, ge=0, le=1000)
    priority: int = Field(0, ge=0, le=1000)
    fallback: str | None = Field(None, pattern=DNS_1035_LABEL, max_length=63)
    max_share: float | None = Field(None, ge=0.0, le=1.0)
    endpoint: str = Field("", description="Explicit host:port; else status.endpoint.")


TOOL_PARSER_NAME = r"^[a-z0-9][a-z0-9_.-]*$"


class Capabilities(_Model):
    """What the route's model can do; the router sends a request only where it fits.

    Defaults are what any chat model behind vLLM or an OpenAI-compatible provider does;
    everything else must be declared, so that a request needing it is never silently
    answered by a model without it.
    """

    tools: StrictBool = Field(False, description="Calls functions (OpenAI tools).")
    tool_parser: str | None = Field(
        None,
        pattern=TOOL_PARSER_NAME,
        max_length=64,
        description="vLLM tool parser for the model's call format (engine routes), e.g. hermes.",
    )
    json_schema: StrictBool = Field(
        False, description="Follows response_format json_object and json_schema."
    )
    logprobs: StrictBool = Field(True, description="Returns token log-probabilities.")
    vision: StrictBool = Field(False, description="Reads images in user messages.")
    context_tokens: int | None = Field(
        None, ge=16, description="Largest prompt plus answer in tokens (unset: not checked)."
    )

    @model_validator(mode="after")
    def _parser_needs_tools(self) -> Capabilities:
        if self.tool_parser is not None and not self.tools:
            raise ValueError("capabilities.toolParser needs capabilities.tools")
        return self


class Replicas(_Model):
    """Replica bounds; `desired` is the scale subresource's field (autoscaler or kubectl scale)."""

    min: int = Field(1, ge=0, le=1000)
    max: int = Field(1, ge=0, le=1000)
    desired: int | None = Field(None, ge=0, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            raise ValueError("replicas.min must be <= replicas.max")
        if self.max < 1:
            raise ValueError("replicas.max must be >= 1")
        if self.desired is not None and not self.min <= self.desired <= self.max:
            raise ValueError("replicas.desired must lie within [replicas.min, replicas.max]")
        return self


class Autoscaling(_Model):
    """Load-driven scaling between replicas.min and replicas.max."""

    metric: ScaleMetric = "waitingRequests"
    target: float = Field(5.0, gt=0.0, description="Per-replica target of the metric.")
    scale_down_stabilization_seconds: int = Field(300, ge=0, le=86400)
    scale_to_zero: bool = False


# Limits shared by ModelRoute and DataSource metadata (same numbers as the CRDs' schemas).
MAX_DESCRIPTION = 500
MAX_UTTERANCES = 20
MAX_UTTERANCE = 500


class OptionMetadata(_Model):
    """What an option (a model route or a data source) is for: the selector reads this.

    `description` says in one line what the option answers; `examples` are questions it
    should catch and `excludes` questions it should not (the selector penalises an option
    whose nearest text is an exclude).
    """

    description: str = Field(
        "", max_length=MAX_DESCRIPTION, description="One line: what this option answers."
    )
    examples: list[Annotated[str, Field(min_length=1, max_length=MAX_UTTERANCE)]] = Field(
        default_factory=list,
        max_length=MAX_UTTERANCES,
        description="Questions this option should catch.",
    )
    excludes: list[Annotated[str, Field(min_length=1, max_length=MAX_UTTERANCE)]] = Field(
        default_factory=list,
        max_length=MAX_UTTERANCES,
        description="Questions this option should not catch.",
    )


class Lifecycle(_Model):
    """Per-route pod lifecycle; None means the operator's default for that setting."""

    drain_seconds: int | None = Field(None, ge=0, le=86400)
    floor_tokens_per_second: float | None = Field(
        None,
        gt=0,
        le=100000,
        description="Slowest decode speed of one generation under load; the default drain "
        "lets the longest allowed answer finish at this speed.",
    )
    pre_stop_seconds: int = Field(5, ge=0, le=300)
    startup_seconds: int = Field(900, ge=30, le=86400)
    probe_timeout_seconds: int = Field(5, ge=1, le=60)
    max_surge: int | None = Field(None, ge=0, le=100)
    max_unavailable: int | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _rollout_moves(self) -> Lifecycle:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("lifecycle.maxSurge and lifecycle.maxUnavailable cannot both be 0")
        return self

    def rollout(self) -> tuple[int, int]:
        """(maxSurge, maxUnavailable): surge one by default, roll in place with maxSurge 0."""
        surge = 1 if self.max_surge is None else self.max_surge
        unavailable = self.max_unavailable
        if unavailable is None:
            unavailable = 1 if surge == 0 else 0
        return surge, unavailable


class ModelRouteSpec(OptionMetadata):
    """What the route serves, how it is deployed and how the router uses it."""

    tier: Tier = "slm"
    model: ModelRef
    size_class: str | None = Field(None, pattern=SIZE_CLASS_NAME, max_length=63)
    resources: Resources | None = None
    engine: Engine | None = None
    upstream: Upstream | None = None
    routing: Routing = Field(default_factory=lambda: Routing.model_validate({}))
    capabilities: Capabilities = Field(default_factory=lambda: Capabilities.model_validate({}))
    replicas: Replicas = Field(default_factory=lambda: Replicas.model_validate({}))
    autoscaling: Autoscaling | None = None
    lifecycle: Lifecycle = Field(default_factory=lambda: Lifecycle.model_validate({}))
    pod_template: dict[str, Any] | None = Field(
        None, description="Merged onto the operator's pod template (strategic-merge style)."
    )

    @model_validator(mode="after")
    def _cross_field(self) -> ModelRouteSpec:
        # Same rules, same messages, as the CRD's x-kubernetes-validations.
        if self.engine is not None and self.upstream is not None:
            raise ValueError("engine and upstream are mutually exclusive")
        if self.engine is None and self.upstream is None and not self.routing.endpoint:
            raise ValueError(
                "exactly one of engine or upstream is required "
                "(or routing.endpoint for a backend deployed elsewhere)"
            )
        if self.upstream is not None and (self.size_class is not None or self._wants_gpu()):
            raise ValueError("sizeClass and resources.gpu apply to engine routes only")
        if self.engine is not None and self.size_class is None and self.resources is None:
            raise ValueError("engine routes need sizeClass or resources")
        if self.engine is not None and not self.model.source:
            raise ValueError("engine routes need model.source (the weights to serve)")
        if self.routing.max_share is not None and self.tier != "llm":
            raise ValueError("routing.maxShare applies to the llm tier only")
        scale_to_zero = self.autoscaling is not None and self.autoscaling.scale_to_zero
        if scale_to_zero != (self.replicas.min == 0):
            raise ValueError(
                "replicas.min may be 0 only with autoscaling.scaleToZero, and vice versa"
            )
        return self

    def _wants_gpu(self) -> bool:
        return self.resources is not None and bool(self.resources.gpu)

    @property
    def backend(self) -> Literal["engine", "upstream", "external"]:
        """Which kind of backend serves the route."""
        if self.engine is not None:
            return "engine"
        if self.upstream is not None:
            return "upstream"
        return "external"


class Condition(_Model):
    """A Kubernetes-style status condition."""

    type: str
    status: Literal["True", "False", "Unknown"] = "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class ModelRouteStatus(_Model):
    """What the operator last observed (written only by the operator)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    observed_generation: int | None = None
    replicas: int = 0
    ready_replicas: int = 0
    desired_replicas: int | None = None
    selector: str = ""
    endpoint: str = ""
    conditions: list[Condition] = Field(default_factory=list)

    def condition(self, type_: str) -> Condition | None:
        """The condition of that type, if any."""
        return next((c for c in self.conditions if c.type == type_), None)


class ObjectMeta(_Model):
    """The part of Kubernetes object metadata Gearshift reads."""

    name: str = Field(..., min_length=1)
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelRoute(_Model):
    """One `ModelRoute` object: metadata, spec and (from a cluster) status."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: ModelRouteSpec
    status: ModelRouteStatus | None = None

    @model_validator(mode="after")
    def _kind(self) -> ModelRoute:
        if self.kind != KIND or self.api_version.split("/")[0] != GROUP:
            raise ValueError(f"expected {API_VERSION} {KIND}, got {self.api_version} {self.kind}")
        if len(self.name) > 63 or not re.match(DNS_1035_LABEL, self.name):
            raise ValueError(
                f"metadata.name {self.name!r} must be a DNS-1035 label (lower-case letters, "
                "digits and '-', starting with a letter, at most 63 characters): it names the "
                "route's Service"
            )
        if self.spec.routing.fallback == self.name:
            raise ValueError("routing.fallback must name another route")
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def served_name(self) -> str:
        return self.spec.model.served_name

    @property
    def endpoint(self) -> str | None:
        """The backend's gRPC address: spec.routing.endpoint, else status.endpoint, else None."""
        if self.spec.routing.endpoint:
            return self.spec.routing.endpoint
        if self.status is not None and self.status.endpoint:
            return self.status.endpoint
        return None

    @property
    def ready(self) -> bool:
        """True when the operator reports the route Ready (always True for explicit endpoints)."""
        if self.spec.routing.endpoint:
            return True
        cond = self.status.condition("Ready") if self.status is not None else None
        return cond is not None and cond.status == "True"

    def to_dict(self) -> dict[str, Any]:
        """The object as Kubernetes JSON (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _documents(data: Any) -> Iterable[Mapping[str, Any]]:
    if data is None:
        return
    if isinstance(data, list):
        for item in data:
            yield from _documents(item)
        return
    if not isinstance(data, Mapping):
        raise ValueError(
            f"expected a mapping or list of ModelRoute objects, got {type(data).__name__}"
        )
    if data.get("kind") == "List" or (
        isinstance(data.get("kind"), str) and str(data["kind"]).endswith("List")
    ):
        yield from _documents(data.get("items") or [])
        return
    if "routes" in data and "spec" not in data:
        yield from _documents(data["routes"])
        return
    yield data


# Kinds a routes file may hold beside ModelRoutes (read by their own loaders).
OTHER_KINDS = frozenset({"DataSource"})


def documents(text: str) -> list[Mapping[str, Any]]:
    """Every object of a routes YAML text, lists and `kind: List` flattened."""
    return [obj for doc in yaml.safe_load_all(text) for obj in _documents(doc)]


def load_routes(text: str) -> list[ModelRoute]:
    """Parses YAML holding routes: a list, a multi-document stream, a `kind: List`, or `routes:`.

    Raises `ValueError` (pydantic's ValidationError is one) naming the bad route.
    """
    routes: list[ModelRoute] = []
    for obj in documents(text):
        if obj.get("kind") in OTHER_KINDS:
            continue  # a DataSource beside the routes: `gearshift.routes.data_source` reads it
        routes.append(ModelRoute.model_validate(dict(obj)))
    names = [(r.namespace, r.name) for r in routes]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"duplicate routes: {sorted(duplicates)}")
    return routes


def load_routes_file(path: str | Path) -> list[ModelRoute]:
    """Reads routes from a local YAML file (see `load_routes` for the accepted layouts)."""
    return load_routes(Path(path).read_text(encoding="utf-8"))
