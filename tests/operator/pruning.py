"""Structural-schema pruning, as the API server applies it to custom resources.

A v1 CRD has no `preserveUnknownFields`: on every write and on every read from etcd the
API server drops each field its structural schema does not specify, silently. That is how
an old CRD left in place by a chart upgrade loses the fields a newer operator relies on,
so the chart-upgrade tests need the same rule. It follows apiextensions-apiserver's
`pruning.Prune` construct by construct:

- `properties`: a key the schema lists is kept and pruned with its own schema;
- `additionalProperties` (a schema): any other key is kept and pruned with that schema;
- neither: the key is dropped; under a schema-less value every map key is dropped;
- `items`: each element is pruned with the item schema;
- `x-kubernetes-preserve-unknown-fields: true`: unknown keys stay, while the keys the
  schema does list are still pruned with their schemas (the same goes for items);
- `x-kubernetes-embedded-resource: true`, and the object's root: `apiVersion`, `kind` and
  `metadata` are left alone (ObjectMeta has its own decoder, not the CRD's schema).

Value validation (types, patterns, CEL) is crd_check.py's job; pruning never rejects.
"""

from __future__ import annotations

import copy
from typing import Any

Schema = dict[str, Any]

META_FIELDS = frozenset({"apiVersion", "kind", "metadata"})


def prune_object(obj: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """A copy of a whole resource pruned by its version's `openAPIV3Schema`."""
    pruned = copy.deepcopy(obj)
    _prune(pruned, {**schema, "x-kubernetes-embedded-resource": True})
    return pruned


def storage_schema(crd: dict[str, Any]) -> Schema:
    """The `openAPIV3Schema` of the CRD's storage version (the one objects are kept in)."""
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def _sub_schema(schema: Schema, key: str) -> tuple[bool, Schema | None]:
    """Whether `key` is specified under `schema`, and the schema it is pruned with."""
    properties = schema.get("properties") or {}
    if key in properties:
        return True, properties[key]
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        return True, additional
    # `additionalProperties: true` is not allowed in a structural schema; false is the
    # same as absent.
    return False, None


def _prune(value: Any, schema: Schema | None) -> None:
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields"):
        _skip_prune(value, schema)
        return
    if isinstance(value, dict):
        if schema is None:
            value.clear()
            return
        for key in list(value):
            if schema.get("x-kubernetes-embedded-resource") and key in META_FIELDS:
                continue
            specified, sub = _sub_schema(schema, key)
            if specified:
                _prune(value[key], sub)
            else:
                del value[key]
    elif isinstance(value, list):
        items = None if schema is None else schema.get("items")
        for item in value:
            _prune(item, items)


def _skip_prune(value: Any, schema: Schema | None) -> None:
    """Under preserve-unknown-fields: unknown keys stay, known ones are still pruned."""
    if schema is None:
        return
    if isinstance(value, dict):
        for key in list(value):
            if schema.get("x-kubernetes-embedded-resource") and key in META_FIELDS:
                continue
            specified, sub = _sub_schema(schema, key)
            if specified:
                _prune(value[key], sub)
    elif isinstance(value, list):
        for item in value:
            _skip_prune(item, schema.get("items"))
