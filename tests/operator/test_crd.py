"""The CRD's own schema and CEL rules accept the examples and reject bad routes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from gearshift.routes import ModelRoute, load_routes_file
from tests.operator.crd_check import load_crd, validate

EXAMPLES = sorted((Path(__file__).parents[2] / "examples/modelroutes").glob("*.yaml"))


def _example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES[0].parent / f"{name}.yaml").read_text())
    return data


def test_crd_shape() -> None:
    crd = load_crd()
    assert crd["spec"]["group"] == "gearshift.dev"
    assert crd["spec"]["names"]["shortNames"] == ["mr"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas.desired",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    for needed in ("Tier", "Size", "Model", "Replicas", "Ready", "Age"):
        assert needed in columns
    # `kubectl get mr -o wide` (priority 1) shows what each route's model can do.
    wide = {
        c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"] if c.get("priority")
    }
    assert wide == {
        "Tools": ".spec.capabilities.tools",
        "JSON": ".spec.capabilities.jsonSchema",
        "Logprobs": ".spec.capabilities.logprobs",
        "Vision": ".spec.capabilities.vision",
        "Context": ".spec.capabilities.contextTokens",
    }


def test_capabilities_are_accepted_and_defaulted() -> None:
    obj = _mutate(
        "small",
        spec__capabilities={"tools": True, "toolParser": "hermes", "contextTokens": 8192},
    )
    assert validate(obj) == []
    caps = ModelRoute.model_validate(obj).spec.capabilities
    assert (caps.tools, caps.tool_parser, caps.context_tokens) == (True, "hermes", 8192)
    assert (caps.json_schema, caps.logprobs, caps.vision) == (False, True, False)
    assert ModelRoute.model_validate(_example("small")).spec.capabilities.tools is False


def _walk(schema: dict[str, Any], path: str = "") -> list[str]:
    missing = [] if "description" in schema or path in ("", ".metadata") else [path]
    for key, sub in (schema.get("properties") or {}).items():
        missing += _walk(sub, f"{path}.{key}")
    if "items" in schema:
        missing += _walk(schema["items"], f"{path}[]")
    return missing


def test_every_field_has_a_description() -> None:
    schema = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "description" in schema
    assert _walk(schema) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_are_accepted_by_crd_and_model(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    assert validate(obj) == []
    assert load_routes_file(path)[0].name == obj["metadata"]["name"]


def _mutate(base: str, **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(_example(base))
    for dotted, value in changes.items():
        node = obj
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return obj


BAD = {
    "min-above-max": (_mutate("small", spec__replicas={"min": 3, "max": 2}), "replicas.min"),
    "both-engine-and-upstream": (
        _mutate("small", spec__upstream={"baseUrl": "https://x/v1", "model": "m"}),
        "mutually exclusive",
    ),
    "neither-engine-nor-upstream": (_mutate("small", spec__engine=None), "exactly one"),
    "upstream-with-size-class": (_mutate("provider", spec__sizeClass="small"), "engine routes"),
    "max-share-above-one": (_mutate("large", spec__routing__maxShare=1.5), "maxShare"),
    "max-share-on-slm": (_mutate("small", spec__routing__maxShare=0.2), "llm tier"),
    "difficulty-inverted": (
        _mutate("small", spec__routing__difficulty={"min": 0.8, "max": 0.2}),
        "difficulty.min",
    ),
    "zero-without-scale-to-zero": (
        _mutate("small", spec__replicas={"min": 0, "max": 2}),
        "scaleToZero",
    ),
    "scale-to-zero-with-min-one": (
        _mutate("medium", spec__replicas={"min": 1, "max": 2}),
        "scaleToZero",
    ),
    "desired-out-of-range": (
        _mutate("small", spec__replicas={"min": 1, "max": 4, "desired": 9}),
        "replicas.desired",
    ),
    "bad-size-class-name": (_mutate("small", spec__sizeClass="Huge GPU"), "sizeClass"),
    "unknown-metric": (_mutate("small", spec__autoscaling__metric="cpu"), "metric"),
    "bad-dtype": (_mutate("small", spec__engine__dtype="int3"), "dtype"),
    "gpu-utilisation-above-one": (
        _mutate("small", spec__engine__gpuMemoryUtilization=1.5),
        "gpuMemoryUtilization",
    ),
    "missing-served-name": (_mutate("small", spec__model={"source": "/models/x"}), "servedName"),
    "engine-without-size": (_mutate("small", spec__sizeClass=None), "sizeClass or resources"),
    "bad-base-url": (_mutate("provider", spec__upstream__baseUrl="ftp://x"), "baseUrl"),
    # Cases the API server used to accept and the cluster then rejected or mis-served.
    "empty-engine-source": (_mutate("small", spec__model__source=""), "model.source"),
    "missing-engine-source": (_mutate("small", spec__model__source=None), "model.source"),
    "cpu-not-a-quantity": (_mutate("small", spec__resources={"cpu": "lots"}), "cpu"),
    "memory-not-a-quantity": (_mutate("small", spec__resources={"memory": "16 GB"}), "memory"),
    "negative-cpu": (_mutate("small", spec__resources={"cpu": -1}), "cpu"),
    "bad-gpu-resource": (_mutate("small", spec__resources={"gpuResource": "gpu"}), "gpuResource"),
    "name-not-dns-1035": (_mutate("small", metadata__name="3.1-llama"), "name"),
    "name-too-long": (_mutate("small", metadata__name="a" * 64), "name"),
    "extra-args-override-model": (
        _mutate("small", spec__engine__extraArgs=["--model", "/other/weights"]),
        "extraArgs",
    ),
    "extra-args-override-served-name": (
        _mutate("small", spec__engine__extraArgs=["--served_model_name=x"]),
        "extraArgs",
    ),
    "extra-args-override-dtype": (
        _mutate("small", spec__engine__extraArgs=["--enable-prefix-caching", "--dtype=half"]),
        "extraArgs",
    ),
    "fallback-not-a-name": (_mutate("large", spec__routing__fallback="Provider Large"), "fallback"),
    "fallback-to-itself": (_mutate("large", spec__routing__fallback="llama-large"), "fallback"),
    "rollout-that-cannot-move": (
        _mutate("small", spec__lifecycle={"maxSurge": 0, "maxUnavailable": 0}),
        "cannot both be 0",
    ),
    "startup-budget-too-short": (
        _mutate("small", spec__lifecycle={"startupSeconds": 5}),
        "startupSeconds",
    ),
    "token-without-hub-source": (
        _mutate("large", spec__model__tokenSecretRef={"name": "hf", "key": "token"}),
        "tokenSecretRef",
    ),
    "node-path-outside-models": (
        _mutate("large", spec__model__nodePath="/mnt/models"),
        "nodePath",
    ),
    "bad-model-source": (_mutate("small", spec__model__source="s3://bucket/x"), "source"),
    "tool-parser-without-tools": (
        _mutate("small", spec__capabilities={"toolParser": "hermes"}),
        "toolParser",
    ),
    "tool-parser-not-a-name": (
        _mutate("small", spec__capabilities={"tools": True, "toolParser": "Hermes Pro"}),
        "toolParser",
    ),
    "context-too-small": (_mutate("small", spec__capabilities={"contextTokens": 4}), "context"),
    "capability-not-a-bool": (_mutate("small", spec__capabilities={"tools": "yes"}), "tools"),
}

# Where the API server points for each new case (the schema path, or the CEL fieldPath).
FIELD_PATHS = {
    "empty-engine-source": ".spec.model.source",
    "missing-engine-source": ".spec.model.source",
    "cpu-not-a-quantity": "spec.resources.cpu",
    "memory-not-a-quantity": "spec.resources.memory",
    "negative-cpu": "spec.resources.cpu",
    "bad-gpu-resource": "spec.resources.gpuResource",
    "name-not-dns-1035": "metadata.name",
    "name-too-long": "metadata.name",
    "extra-args-override-model": ".spec.engine.extraArgs",
    "extra-args-override-served-name": ".spec.engine.extraArgs",
    "extra-args-override-dtype": ".spec.engine.extraArgs",
    "fallback-not-a-name": "spec.routing.fallback",
    "fallback-to-itself": ".spec.routing.fallback",
    "rollout-that-cannot-move": ".spec.lifecycle.maxUnavailable",
    "startup-budget-too-short": "spec.lifecycle.startupSeconds",
    "token-without-hub-source": ".spec.model.tokenSecretRef",
    "node-path-outside-models": ".spec.model.nodePath",
    "bad-model-source": "spec.model.source",
    "tool-parser-without-tools": ".spec.capabilities.toolParser",
    "tool-parser-not-a-name": "spec.capabilities.toolParser",
    "context-too-small": "spec.capabilities.contextTokens",
    "capability-not-a-bool": "spec.capabilities.tools",
}


@pytest.mark.parametrize("name", sorted(FIELD_PATHS))
def test_each_rejection_points_at_the_field(name: str) -> None:
    obj, _ = BAD[name]
    errors = validate(obj)
    assert any(e.startswith(FIELD_PATHS[name] + ":") for e in errors), errors


@pytest.mark.parametrize("name", sorted(FIELD_PATHS))
def test_the_pydantic_model_rejects_what_the_crd_rejects(name: str) -> None:
    """The router's local routes file and the operator hold routes to the same rules."""
    obj, _ = BAD[name]
    with pytest.raises(ValidationError):
        ModelRoute.model_validate(obj)


def test_extra_args_that_are_not_operator_flags_are_accepted() -> None:
    args = ["--enable-prefix-caching", "--max-num-seqs=64", "--model-loader-extra-config", "{}"]
    obj = _mutate("small", spec__engine__extraArgs=args)
    assert validate(obj) == []
    assert ModelRoute.model_validate(obj).spec.engine is not None


def test_the_crd_and_the_model_refuse_the_same_engine_flags() -> None:
    from gearshift.routes.model_route import OPERATOR_FLAG_PATTERN

    schema = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    extra = schema["properties"]["spec"]["properties"]["engine"]["properties"]["extraArgs"]
    assert f"'{OPERATOR_FLAG_PATTERN}'" in extra["x-kubernetes-validations"][0]["rule"]


def test_quantities_accept_what_kubernetes_accepts() -> None:
    for cpu, memory in (("500m", "16Gi"), (4, "1.5G"), ("0.5", "128974848"), ("1e3", "129e6")):
        obj = _mutate("small", spec__resources={"cpu": cpu, "memory": memory})
        assert validate(obj) == [], (cpu, memory)
        ModelRoute.model_validate(obj)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_routes_are_rejected_with_a_clear_message(name: str) -> None:
    obj, fragment = BAD[name]
    errors = validate(obj)
    assert errors, f"{name} was accepted"
    assert any(fragment in e for e in errors), errors


CEL_ONLY = {
    "min-above-max",
    "both-engine-and-upstream",
    "neither-engine-nor-upstream",
    "upstream-with-size-class",
    "max-share-on-slm",
    "difficulty-inverted",
    "zero-without-scale-to-zero",
    "scale-to-zero-with-min-one",
    "desired-out-of-range",
    "engine-without-size",
}


@pytest.mark.parametrize("name", sorted(CEL_ONLY))
def test_the_pydantic_model_enforces_the_same_cross_field_rules(name: str) -> None:
    obj, _ = BAD[name]
    with pytest.raises(ValidationError):
        ModelRoute.model_validate(obj)


def test_explicit_endpoint_route_needs_no_backend() -> None:
    obj = _mutate("small", spec__engine=None, spec__routing__endpoint="127.0.0.1:50053")
    assert validate(obj) == []
    assert ModelRoute.model_validate(obj).endpoint == "127.0.0.1:50053"


def _untyped(schema: dict[str, Any], path: str = "") -> list[str]:
    typed = "type" in schema or schema.get("x-kubernetes-int-or-string") is True
    bad = [] if typed else [path or "<root>"]
    for key, sub in (schema.get("properties") or {}).items():
        bad += _untyped(sub, f"{path}.{key}")
    if "items" in schema:
        bad += _untyped(schema["items"], f"{path}[]")
    return bad


def test_crd_is_a_valid_structural_crd() -> None:
    """Valid CustomResourceDefinition (Kubernetes 1.30 schema) with a type on every node."""
    crd = load_crd()
    kubernetes_validate.validate(crd, "1.30", strict=True)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _untyped(schema) == []


def test_the_crd_and_the_model_share_their_patterns() -> None:
    from gearshift.routes.model_route import DNS_1035_LABEL, QUANTITY

    schema = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]
    assert schema["properties"]["metadata"]["properties"]["name"]["pattern"] == DNS_1035_LABEL
    assert spec["routing"]["properties"]["fallback"]["pattern"] == DNS_1035_LABEL
    for field in ("cpu", "memory"):
        assert spec["resources"]["properties"][field]["pattern"] == QUANTITY
