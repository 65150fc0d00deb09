"""A route's `spec.podTemplate` merged onto the pod template the operator builds.

The merge follows a strategic merge patch for the fields people override on model servers:
maps merge key by key; lists whose items Kubernetes keys by name (containers,
initContainers, volumes, volumeMounts, env, ports, ...) merge item by item on `name`;
any other list replaces the built one; `null` deletes a key. What the operator owns is
refused, not silently overwritten: the model server's command and args, its `GEARSHIFT_*`
environment (the engine settings, including the model), and the selector labels.
"""

from __future__ import annotations

import copy
from typing import Any

# Lists Kubernetes merges by the item's `name` (patchMergeKey) in a pod template.
MERGED_BY_NAME = frozenset(
    {
        "containers",
        "initContainers",
        "ephemeralContainers",
        "volumes",
        "volumeMounts",
        "volumeDevices",
        "env",
        "ports",
        "imagePullSecrets",
        "resourceClaims",
    }
)


class OverrideError(ValueError):
    """The override touches what the operator owns."""


def merge(base: Any, patch: Any, key: str = "") -> Any:
    """`patch` merged onto `base` (neither is changed)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if key in MERGED_BY_NAME and isinstance(base, list) and isinstance(patch, list):
        out_list = [copy.deepcopy(item) for item in base]
        index = {item.get("name"): i for i, item in enumerate(out_list) if isinstance(item, dict)}
        for item in patch:
            name = item.get("name") if isinstance(item, dict) else None
            if name is not None and name in index:
                out_list[index[name]] = merge(out_list[index[name]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _check(template: dict[str, Any], override: dict[str, Any], main: str) -> None:
    labels = (template.get("metadata") or {}).get("labels") or {}
    wanted = (override.get("metadata") or {}).get("labels") or {}
    clash = sorted(k for k in wanted if k in labels and wanted[k] != labels[k])
    if clash:
        raise OverrideError(f"podTemplate may not change the operator's labels {clash}")
    for container in (override.get("spec") or {}).get("containers") or []:
        if not isinstance(container, dict) or container.get("name") != main:
            continue
        owned = sorted(k for k in ("command", "args") if k in container)
        owned += sorted(
            f"env {e.get('name')}"
            for e in container.get("env") or []
            if isinstance(e, dict) and str(e.get("name", "")).startswith("GEARSHIFT_")
        )
        if owned:
            raise OverrideError(
                f"podTemplate may not set {', '.join(owned)} of container {main!r}: the "
                "operator derives them from the spec (model, engine, lifecycle)"
            )


def apply(template: dict[str, Any], override: dict[str, Any] | None, main: str) -> dict[str, Any]:
    """The template with the override merged in; OverrideError if it touches owned fields."""
    if not override:
        return template
    _check(template, override, main)
    merged: dict[str, Any] = merge(template, override)
    return merged
