"""The pruning helper drops what the API server drops, and keeps what it keeps."""

from __future__ import annotations

from typing import Any

from tests.operator.crd_check import load_crd
from tests.operator.pruning import prune_object, storage_schema

OBJ_META = {"apiVersion": "x.dev/v1", "kind": "X", "metadata": {"name": "a", "labels": {"l": "v"}}}


def _root(spec_schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"spec": spec_schema}}


def test_unknown_properties_are_dropped_and_known_ones_pruned_inside() -> None:
    schema = _root(
        {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {}}}}}
    )
    obj = {**OBJ_META, "spec": {"a": {"b": 1, "c": 2}, "d": 3}, "extra": True}
    assert prune_object(obj, schema) == {**OBJ_META, "spec": {"a": {"b": 1}}}


def test_root_type_meta_and_object_meta_are_left_alone() -> None:
    obj = {**OBJ_META, "spec": {}}
    assert prune_object(obj, _root({"type": "object"})) == obj


def test_object_without_properties_is_emptied() -> None:
    obj = {**OBJ_META, "spec": {"a": 1, "b": {"c": 2}}}
    assert prune_object(obj, _root({"type": "object"})) == {**OBJ_META, "spec": {}}


def test_additional_properties_keep_any_key_and_prune_its_value() -> None:
    schema = _root(
        {
            "type": "object",
            "additionalProperties": {"type": "object", "properties": {"keep": {}}},
        }
    )
    obj = {**OBJ_META, "spec": {"x": {"keep": 1, "drop": 2}, "y": {"drop": 3}}}
    assert prune_object(obj, schema)["spec"] == {"x": {"keep": 1}, "y": {}}


def test_list_items_are_pruned_with_the_item_schema() -> None:
    schema = _root(
        {
            "type": "object",
            "properties": {
                "l": {"type": "array", "items": {"type": "object", "properties": {"n": {}}}},
                "raw": {"type": "array", "items": {"type": "object"}},
            },
        }
    )
    obj = {**OBJ_META, "spec": {"l": [{"n": 1, "m": 2}, {"m": 3}], "raw": [{"a": 1}, "s"]}}
    assert prune_object(obj, schema)["spec"] == {"l": [{"n": 1}, {}], "raw": [{}, "s"]}


def test_preserve_unknown_fields_keeps_unknown_keys_but_prunes_known_ones() -> None:
    """The Kubernetes docs' example: `json` keeps `something`, `spec.bar` is still pruned."""
    schema = _root(
        {
            "type": "object",
            "properties": {
                "json": {
                    "x-kubernetes-preserve-unknown-fields": True,
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {"foo": {"type": "string"}}}
                    },
                }
            },
        }
    )
    obj = {**OBJ_META, "spec": {"json": {"spec": {"foo": "abc", "bar": "def"}, "something": 1}}}
    assert prune_object(obj, schema)["spec"] == {"json": {"spec": {"foo": "abc"}, "something": 1}}


def test_embedded_resource_keeps_its_type_and_object_meta() -> None:
    schema = _root(
        {
            "type": "object",
            "properties": {
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {"spec": {"type": "object", "properties": {"a": {}}}},
                }
            },
        }
    )
    template = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"a": 1}}
    obj = {**OBJ_META, "spec": {"template": {**template, "status": {}, "spec": {"a": 1, "b": 2}}}}
    assert prune_object(obj, schema)["spec"] == {"template": template}


def test_the_route_crd_keeps_pod_template_fields_and_prunes_unknown_status() -> None:
    schema = storage_schema(load_crd())
    pod_template = {"spec": {"runtimeClassName": "nvidia", "anything": {"deep": [1]}}}
    obj = {
        "apiVersion": "gearshift.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "r"},
        "spec": {"model": {"servedName": "m", "typo": 1}, "podTemplate": pod_template},
        "status": {"replicas": 1, "scratch": "x"},
    }
    pruned = prune_object(obj, schema)
    assert pruned["spec"] == {"model": {"servedName": "m"}, "podTemplate": pod_template}
    assert pruned["status"] == {"replicas": 1}
