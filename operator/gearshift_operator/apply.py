"""Apply a child the way `kubectl apply` does: a three-way merge written with a full update.

The operator owns exactly the fields it sets. Each child carries, in the annotation
`gearshift.dev/last-applied`, the configuration the operator last applied (labels, owner
reference, spec or data). The next apply builds the new object from the live one:
- a field in the new configuration is set (its value wins over the live one, except that
  an equal value in another spelling, such as a quantity the API server normalised,
  `500m` for `0.5`, keeps the stored spelling);
- a field in the last-applied configuration and not in the new one is removed (the
  `fetch-weights` init container of a route that moved from `hf://` to `pvc://`, a size
  class's old `nodeSelector` keys, a `podTemplate` field the user deleted);
- a field in neither is left alone: it belongs to someone else (server defaults,
  `kubectl rollout restart`'s `kubectl.kubernetes.io/restartedAt` template annotation).
Lists the API server keys by name (containers, initContainers, env, volumes,
volumeMounts, ports, ...) merge item by item; other lists are replaced whole.

A Deployment's `spec.replicas` is written only when the route's replica count changes
(or the Deployment is created): between changes, a count another writer set (an HPA on
the Deployment, `kubectl scale deploy`) stays. The route's own scale subresource is the
supported way to scale, and it always reaches the Deployment.

The result is written with PUT carrying the live object's resourceVersion, so a write
based on a stale read (an out-of-date watch cache, another writer in between) is refused
with 409 and redone from a fresh read. When the result equals the live object nothing is
sent at all: a reconcile of an unchanged route makes no write.

Why not server-side apply: it would do the same merge on the server, but every reconcile
would still send one PATCH per child (the server decides it was a no-op), and with
`force` the operator would take `spec.replicas` back from an HPA on every reconcile.
"""

from __future__ import annotations

import copy
import json
import logging
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from gearshift_operator.kube import KubeClient, KubeError
from gearshift_operator.pod_override import MERGED_BY_NAME

LOG = logging.getLogger("gearshift.operator.apply")
LAST_APPLIED = "gearshift.dev/last-applied"
# Maps whose values are quantities, and quantity fields (the API server normalises both).
QUANTITY_MAPS = frozenset({"requests", "limits", "overhead"})
QUANTITY_FIELDS = frozenset({"sizeLimit"})
# Writes refused as stale (409) are redone from a fresh read this many times in all.
ATTEMPTS = 4
Manifest = dict[str, Any]


def applied_config(child: Manifest) -> Manifest:
    """The part of `child` the operator owns: what the last-applied annotation records."""
    meta = child["metadata"]
    owned_meta = {k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta}
    config: Manifest = {"metadata": copy.deepcopy(owned_meta)}
    for key in ("spec", "data"):
        if key in child:
            config[key] = copy.deepcopy(child[key])
    return config


def _encode(config: Manifest) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def last_applied(live: Manifest) -> Manifest | None:
    """What the operator applied last time; None for an object without (or with a bad) record."""
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError:
        return None
    return config if isinstance(config, dict) else None


def for_create(child: Manifest) -> Manifest:
    """`child` as created: with the last-applied record of what it sets."""
    created = copy.deepcopy(child)
    annotations = created["metadata"].setdefault("annotations", {})
    annotations[LAST_APPLIED] = _encode(applied_config(child))
    return created


def _quantity(value: Any) -> Decimal | None:
    try:
        parsed: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, ArithmeticError):
        return None
    return parsed


def same_value(desired: Any, live: Any, key: str, parent: str) -> bool:
    """True when the API server stores `desired` as `live` (quantities compared by value)."""
    if desired == live:
        return True
    if parent in QUANTITY_MAPS or key in QUANTITY_FIELDS:
        want, have = _quantity(desired), _quantity(live)
        return want is not None and want == have
    return False


def contains(desired: Any, live: Any, key: str = "", parent: str = "") -> bool:
    """True when every field of `desired` is in `live` with the same value (defaults may add)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and contains(v, live[k], k, key) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(contains(d, v, "", key) for d, v in zip(desired, live, strict=True))
        )
    return same_value(desired, live, key, parent)


def _by_name(items: Any) -> dict[str, Any] | None:
    """A name-keyed list as {name: item}; None when it is not a list of named items."""
    if not isinstance(items, list):
        return None
    named = {item.get("name"): item for item in items if isinstance(item, dict)}
    if len(named) != len(items) or not all(isinstance(name, str) for name in named):
        return None
    return {str(name): item for name, item in named.items()}


def merge(last: Any, desired: Any, live: Any, key: str = "", parent: str = "") -> Any:
    """The value to write: `desired` merged onto `live`, minus what only `last` had."""
    if isinstance(desired, dict):
        out = copy.deepcopy(live) if isinstance(live, dict) else {}
        previous = last if isinstance(last, dict) else {}
        for k, v in desired.items():
            out[k] = merge(previous.get(k), v, out.get(k), k, key)
        for k in previous:
            if k not in desired:
                out.pop(k, None)
        return out
    wanted = _by_name(desired) if key in MERGED_BY_NAME else None
    if wanted is not None:
        current = _by_name(live) or {}
        previous_items = _by_name(last) or {}
        merged = [
            merge(previous_items.get(name), item, current.get(name), "", key)
            for name, item in wanted.items()
        ]
        # Items nobody asked this operator for (added by someone else) stay, after ours.
        merged += [
            copy.deepcopy(item)
            for name, item in current.items()
            if name not in wanted and name not in previous_items
        ]
        return merged
    if isinstance(desired, list):
        # A list replaced whole: the live one stays when it holds what we want, and holds
        # no more than that or we want what we wanted last time (the rest are defaults).
        if contains(desired, live, key, parent) and (
            last == desired or contains(live, desired, key, parent)
        ):
            return copy.deepcopy(live)
        return copy.deepcopy(desired)
    if same_value(desired, live, key, parent):
        return copy.deepcopy(live)
    return copy.deepcopy(desired)


def desired_object(child: Manifest, live: Manifest) -> Manifest:
    """The whole object to write for `child`, built from `live` (see the module docstring)."""
    config = applied_config(child)
    last = last_applied(live) or {}
    intent = copy.deepcopy(config)
    live_spec = live.get("spec") or {}
    if (
        child.get("kind") == "Deployment"
        and "replicas" in live_spec
        and (last.get("spec") or {}).get("replicas") == config["spec"].get("replicas")
    ):
        # The route's count has not changed since the last apply: a count someone else
        # set since (an HPA on the Deployment) stays.
        intent["spec"]["replicas"] = live_spec["replicas"]
    new = copy.deepcopy(live)
    for key, value in intent.items():
        new[key] = merge(last.get(key), value, live.get(key), key)
    for key in last:
        if key not in intent:
            new.pop(key, None)
    annotations = new["metadata"].setdefault("annotations", {})
    annotations[LAST_APPLIED] = _encode(config)
    return new


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """The paths where `new` differs from `old` (for the debug log of each update)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in differences(old.get(k), new.get(k), f"{path}.{k}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            d
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    return [] if old == new else [path or "."]


async def apply(
    api: KubeClient, path: str, child: Manifest, live: Manifest | None, check: Any
) -> tuple[str, Manifest]:
    """Creates or updates one child; returns (created / updated / unchanged, the object).

    `live` is the cached object (None when the cache has none); a stale one costs a 409
    and a fresh read, never a lost write. `check(live)` runs before any change to an
    existing object (the ownership check raises there).
    """
    collection = path.rsplit("/", 1)[0]
    for _attempt in range(ATTEMPTS):
        if live is None:
            try:
                return "created", await api.create(collection, for_create(child))
            except KubeError as err:
                if err.status != 409:
                    raise
                live = await api.get(path)  # created meanwhile (e.g. by another replica)
                if live is None:
                    continue
        check(live)
        new = desired_object(child, live)
        if new == live:
            return "unchanged", live
        LOG.debug("%s %s differs at %s", child["kind"], path, ", ".join(differences(live, new)))
        try:
            return "updated", await api.replace(path, new)
        except KubeError as err:
            if err.status not in (404, 409):
                raise
            live = await api.get(path)  # stale read, or deleted meanwhile
    raise KubeError(409, f"{child['kind']} {child['metadata']['name']} kept changing under us")
