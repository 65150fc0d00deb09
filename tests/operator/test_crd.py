"""The CRD's own schema and CEL rules accept the examples and reject bad routes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

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
    "unknown-size-class": (_mutate("small", spec__sizeClass="huge"), "sizeClass"),
    "unknown-metric": (_mutate("small", spec__autoscaling__metric="cpu"), "metric"),
    "bad-dtype": (_mutate("small", spec__engine__dtype="int3"), "dtype"),
    "gpu-utilisation-above-one": (
        _mutate("small", spec__engine__gpuMemoryUtilization=1.5),
        "gpuMemoryUtilization",
    ),
    "missing-served-name": (_mutate("small", spec__model={"source": "/models/x"}), "servedName"),
    "engine-without-size": (_mutate("small", spec__sizeClass=None), "sizeClass or resources"),
    "bad-base-url": (_mutate("provider", spec__upstream__baseUrl="ftp://x"), "baseUrl"),
}


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
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    crd = load_crd()
    kubernetes_validate.validate(crd, "1.30", strict=True)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _untyped(schema) == []
