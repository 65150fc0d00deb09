"""Validates objects against the ModelRoute CRD the way the API server does on apply.

1. structural defaults are applied (the API server defaults before validating);
2. the openAPIV3Schema is checked with a JSON-schema validator (Draft 4, the dialect
   Kubernetes' OpenAPI v3 schemas use, e.g. boolean exclusiveMinimum);
3. every `x-kubernetes-validations` CEL rule is evaluated with cel-python, with `self`
   bound to the value at the rule's place in the object; a failure is reported at the
   rule's `fieldPath` (like the API server), so tests can check where it points.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

# The CRD's one copy; the chart renders it from there (helm/gearshift/templates/crds.yaml).
CRD_PATH = Path(__file__).parents[2] / "helm/gearshift/files/crds/modelroutes.gearshift.dev.yaml"


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    version = crd["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(value[key], sub)
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def _cel_errors(value: Any, schema: dict[str, Any], path: str, env: Any) -> list[str]:
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        program = env.program(env.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception) or not bool(result):
            # The API server reports a failed rule at its fieldPath when the rule has one.
            where = f"{path}{rule.get('fieldPath', '')}"
            errors.append(f"{where}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                errors += _cel_errors(value[key], sub, f"{path}.{key}", env)
    return errors


def validate(obj: dict[str, Any], crd: dict[str, Any] | None = None) -> list[str]:
    """Error messages the API server would answer with; empty means accepted."""
    schema = schema_of(crd or load_crd())
    obj = apply_defaults(copy.deepcopy(obj), schema)
    validator = jsonschema.Draft4Validator(schema)
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
    if errors:
        return errors
    return _cel_errors(obj, schema, "", celpy.Environment())
