"""The example ModelRoutes in examples/modelroutes/ are accepted by the chart's CRD.

Checked the way the API server checks `kubectl apply`: structural defaults, the
openAPIV3Schema (JSON Schema Draft 4, Kubernetes' dialect: boolean exclusiveMinimum),
then every `x-kubernetes-validations` CEL rule (with cel-python when installed).
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gearshift.routes.model_route import ModelRoute
from tests.helm.chart import CRD_FILE, EXAMPLES_DIR, render_set

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml")) if EXAMPLES_DIR.is_dir() else []


def _schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _defaulted(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _defaulted(value[key], sub)
    elif isinstance(value, list) and "items" in schema:
        return [_defaulted(v, schema["items"]) for v in value]
    return value


def _cel_errors(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    import celpy

    errors: list[str] = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations") or []:
        result = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception) or not bool(result):
            errors.append(f"{path or '.'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                errors += _cel_errors(value[key], sub, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _cel_errors(item, schema["items"], f"{path}[{i}]")
    return errors


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """What the API server would refuse the object with; empty means accepted."""
    schema = _schema()
    obj = _defaulted(copy.deepcopy(obj), schema)
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}"
        for e in jsonschema.Draft4Validator(schema).iter_errors(obj)
    ]
    if not errors and importlib.util.find_spec("celpy") is not None:
        errors = _cel_errors(obj, schema, "")
    return errors


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_examples_exist_for_each_size_and_a_provider() -> None:
    assert EXAMPLES, f"no example ModelRoutes in {EXAMPLES_DIR}"
    docs = [d for p in EXAMPLES for d in _documents(p)]
    sizes = {d["spec"].get("sizeClass") for d in docs if "engine" in d["spec"]}
    assert {"small", "medium", "large"} <= sizes
    assert any("upstream" in d["spec"] for d in docs), "an external-provider example"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_accepted_by_the_crd(path: Path) -> None:
    for doc in _documents(path):
        assert doc["apiVersion"] == "gearshift.dev/v1alpha1" and doc["kind"] == "ModelRoute"
        assert validation_errors(doc) == [], path.name
        # The router and operator read it with the shared model too.
        ModelRoute.model_validate(doc)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_size_class_exists_in_the_chart(path: Path) -> None:
    table = yaml.safe_load(
        yaml.safe_load(render_set("default")["gearshift/templates/operator/configmap.yaml"])[
            "data"
        ]["size-classes.yaml"]
    )
    for doc in _documents(path):
        size = doc["spec"].get("sizeClass")
        if size is not None:
            assert size in table, f"{path.name}: size class {size!r} not in the chart's values"


# (case, change to the small example's spec, text the refusal must contain)
BROKEN: list[tuple[str, dict[str, Any], str]] = [
    ("size class that is no name", {"sizeClass": "Huge GPU"}, "sizeClass"),
    ("unknown tier", {"tier": "medium"}, "tier"),
    ("negative replicas", {"replicas": {"min": -1, "max": 2}}, "replicas.min"),
    ("min above max", {"replicas": {"min": 5, "max": 2}}, "replicas.min must be <= replicas.max"),
    (
        "engine and upstream",
        {"upstream": {"baseUrl": "https://x/v1", "model": "m"}},
        "mutually exclusive",
    ),
    ("bad GPU memory share", {"engine": {"gpuMemoryUtilization": 1.5}}, "gpuMemoryUtilization"),
]

CEL_MESSAGES = {"replicas.min must be <= replicas.max", "mutually exclusive"}


@pytest.mark.parametrize(("case", "change", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_route_is_refused(case: str, change: dict[str, Any], expected: str) -> None:
    small = EXAMPLES_DIR / "small.yaml"
    doc = _documents(small)[0]
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(doc["spec"].get(key), dict):
            doc["spec"][key] = {**doc["spec"][key], **value}
        else:
            doc["spec"][key] = value
    errors = validation_errors(doc)
    assert any(expected in e for e in errors), f"{case}: {errors}"
