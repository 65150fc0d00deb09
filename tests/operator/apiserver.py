"""kmock's KubernetesEmulator plus the API-server semantics the operator relies on.

kmock (v0.8) stores objects, streams watch events, merges merge-patches and applies JSON
patches, and honours finalizers on deletion. It does not stamp server-side metadata, keep
spec and status apart for resources with a status subresource, or filter by labelSelector.
This subclass adds exactly those, following the real API server:
- create: metadata.name from generateName (kopf's events), uid, creationTimestamp,
  generation=1, resourceVersion, namespace;
- update: resourceVersion always; generation +1 only when spec changes;
- status subresource: a PATCH to /status changes only status, a PATCH to the object
  itself never changes status (for resources declared with a status subresource);
- list/watch: `labelSelector` equality terms (a=b,c=d) filter the items; the selector of
  every watch is recorded (`watch_selectors`), to check what the client asks the server;
- refusals: `deny(plural, status, message)` makes creates and patches of that resource fail
  with a Kubernetes Status, as a validating admission policy or webhook (a GPU quota, a
  Pod Security rule) would; `allow(plural)` lifts it.
- garbage collection: after a delete, an object whose every owner reference names an
  object that no longer exists is deleted too (background cascading deletion, as the
  cluster's garbage collector does through ownerReferences).
- leases (`coordination.k8s.io/v1`, for leader election): PUT replaces the object and is
  refused with 409 Conflict when its metadata.resourceVersion is not the stored one (the
  optimistic concurrency client-go's leaderelection relies on); a create of an existing
  Lease is 409 AlreadyExists.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import uuid
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock import ResourceInfo, action
from kmock._internal import dicts
from kmock._internal.k8s import KubernetesError

RESOURCES: dict[str, ResourceInfo] = {
    "gearshift.dev/v1alpha1/modelroutes": ResourceInfo(
        kind="ModelRoute",
        singular="modelroute",
        namespaced=True,
        shortnames={"mr"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status", "scale"},
    ),
    "gearshift.dev/v1alpha1/datasources": ResourceInfo(
        kind="DataSource",
        singular="datasource",
        namespaced=True,
        shortnames={"ds"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status"},
    ),
    "apps/v1/deployments": ResourceInfo(
        kind="Deployment",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status", "scale"},
    ),
    "v1/services": ResourceInfo(
        kind="Service", namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"}
    ),
    "v1/configmaps": ResourceInfo(
        kind="ConfigMap",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    # kopf's backbone: it waits for namespaces and CRDs in discovery before it watches anything.
    "v1/namespaces": ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"get", "list", "watch"}
    ),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs={"get", "list", "watch"}
    ),
    # Pods and Jobs: the tests play kubelet and Job controller, writing their status
    # through /status as those do (pod_failures.py builds it as a kubelet reports it).
    "v1/pods": ResourceInfo(
        kind="Pod",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
        subresources={"status"},
    ),
    "batch/v1/jobs": ResourceInfo(
        kind="Job",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
        subresources={"status"},
    ),
    "v1/events": ResourceInfo(kind="Event", namespaced=True, verbs={"create", "list"}),
    "coordination.k8s.io/v1/leases": ResourceInfo(
        kind="Lease",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    ),
    "policy/v1/poddisruptionbudgets": ResourceInfo(
        kind="PodDisruptionBudget",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
}
WITH_STATUS = {"modelroutes", "datasources", "deployments", "pods", "jobs"}
# Resources whose PUT (a full update) the emulator serves, with resourceVersion conflicts.
REPLACEABLE = {"leases"}


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _denied: dict[str, KubernetesError] = attrs.field(factory=dict, init=False)
    watch_selectors: list[tuple[str, str]] = attrs.field(factory=list, init=False)

    def deny(self, plural: str, status: int, message: str) -> None:
        """Creates and patches of `plural` fail with this status and message from now on."""
        reason = {400: "BadRequest", 403: "Forbidden", 422: "Invalid"}.get(status, "Failure")
        self._denied[plural] = KubernetesError(status=status, reason=reason, message=message)

    def allow(self, plural: str) -> None:
        self._denied.pop(plural, None)

    def served(self) -> list[Any]:
        """Every request served so far (method, url, headers), oldest first."""
        return list(self._requests)

    def declare_resources(self) -> None:
        for key, info in RESOURCES.items():
            self.resources[key] = info

    def _current(self, request: Any) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        raw: dict[str, Any] = self.objects[key].raw
        return raw

    async def _handle(self, request: Any) -> Any:
        data = request.data
        plural = request.resource.plural if request.resource is not None else None
        if request.action == action.WATCH and plural is not None:
            selector = request.params.get("labelSelector", "") if request.params else ""
            self.watch_selectors.append((plural, selector))
        if request.action in (action.CREATE, action.UPDATE) and plural in self._denied:
            raise self._denied[plural]
        if plural in REPLACEABLE and request.method == kmock.method.PUT and request.name:
            return await self._replace(request)
        if isinstance(data, dict) and request.action == action.CREATE:
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("namespace", request.namespace)
            meta.setdefault(
                "creationTimestamp",
                datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            meta["generation"] = 1
            meta["resourceVersion"] = str(next(self._versions))
        elif isinstance(data, dict) and request.action == action.UPDATE:
            current = self._current(request)
            if current is not None:
                if plural in WITH_STATUS and request.subresource == "status":
                    for key in list(data):
                        if key not in ("status", "metadata"):
                            del data[key]
                    data.get("metadata", {}).pop("generation", None)
                elif plural in WITH_STATUS:
                    data.pop("status", None)
                meta = data.setdefault("metadata", {})
                meta["resourceVersion"] = str(next(self._versions))
                if "spec" in data and request.subresource != "status":
                    merged = dicts.patch_dict(copy.deepcopy(current), {"spec": data["spec"]})
                    if merged.get("spec") != current.get("spec"):
                        meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        try:
            return await super()._handle(request)
        finally:
            if request.action in (action.DELETE, action.UPDATE):
                await self._collect_garbage()

    async def _replace(self, request: Any) -> Any:
        """PUT of a whole object: 404 when absent, 409 when its resourceVersion is stale."""
        plural = request.resource.plural
        if plural in self._denied:
            raise self._denied[plural]
        key = (request.resource, request.namespace, request.name)
        data = request.data if isinstance(request.data, dict) else {}
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise KubernetesError(status=404, reason="NotFound", message="not found")
            current = self._objects[key].raw
            meta = data.setdefault("metadata", {})
            sent = meta.get("resourceVersion")
            stored = current["metadata"].get("resourceVersion")
            if sent is not None and sent != stored:
                raise KubernetesError(
                    status=409,
                    reason="Conflict",
                    message=f'Operation cannot be fulfilled on {plural} "{request.name}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                )
            for field in ("uid", "creationTimestamp", "namespace", "name", "generation"):
                if field in current["metadata"]:
                    meta[field] = current["metadata"][field]
            meta["resourceVersion"] = str(next(self._versions))
            obj = self._objects[key]
            obj.delete()  # history keeps the old version; the object is replaced, not merged
            obj.create(data)
            raw = obj.raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)

    async def _collect_garbage(self) -> None:
        """Deletes dependents whose owners are all gone, until nothing more goes."""
        while True:
            async with self._lock:
                live = {
                    o.raw["metadata"].get("uid") for o in self._objects.values() if not o.deleted
                }
                orphans = [
                    (key, obj)
                    for key, obj in self._objects.items()
                    if not obj.deleted
                    and (owners := obj.raw["metadata"].get("ownerReferences") or [])
                    and all(ref.get("uid") not in live for ref in owners)
                ]
                for (resource, _ns, _name), obj in orphans:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
            if not orphans:
                return

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        selector = _selector(request)
        if selector and isinstance(result, dict):
            result["items"] = [o for o in result["items"] if _matches(o, selector)]
        return result


def _selector(request: Any) -> dict[str, str]:
    raw = request.params.get("labelSelector", "") if request.params else ""
    pairs = [term.split("=", 1) for term in raw.split(",") if "=" in term]
    return {k.strip(): v.strip() for k, v in pairs}


def _matches(obj: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())
