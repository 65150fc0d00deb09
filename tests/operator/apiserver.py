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
- update (PUT): the object is replaced by the request's (server-owned metadata and, with a
  status subresource, status kept); a request whose resourceVersion is not the stored one
  is refused with 409 Conflict, one without it with 422; an update that changes nothing
  writes nothing (same resourceVersion, no watch event). kmock has no PUT at all.
- storage form: resource quantities (container requests/limits, emptyDir sizeLimit) are
  stored canonically (`0.5` -> `500m`, `1024Mi` -> `1Gi`; `quantity.canonical`), and a few
  server defaults are filled in (pod restartPolicy/dnsPolicy/schedulerName, containers'
  terminationMessagePath/Policy, a Service's sessionAffinity, its ports' protocol and
  targetPort), so a client comparing its manifest with the stored object as strings keeps
  finding differences, as it would on a real cluster.
- validation: a pod template whose container mounts a volume the pod does not declare is
  refused with 422 (the real server's `volumeMounts[i].name: Not found`).
- accounting: every request is counted by (method, plural, subresource) in `calls`, and
  every write (POST/PUT/PATCH/DELETE) is listed in `writes`, to assert how much a client
  asks of the API server.
"""

from __future__ import annotations

import collections
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
from kmock._internal.k8s import KubernetesError, KubernetesObjectNotFoundError

from tests.operator.quantity import canonical

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
_ADDRESSES = itertools.count(10)


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _denied: dict[str, KubernetesError] = attrs.field(factory=dict, init=False)
    watch_selectors: list[tuple[str, str]] = attrs.field(factory=list, init=False)
    calls: collections.Counter[tuple[str, str, str]] = attrs.field(
        factory=collections.Counter, init=False
    )
    writes: list[tuple[str, str, str]] = attrs.field(factory=list, init=False)

    def writes_to(self, plural: str, name: str | None = None) -> list[str]:
        """Methods of the writes to `plural` (and object `name`, or `name/status`) so far."""
        return [m for m, p, n in self.writes if p == plural and (name is None or n == name)]

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
        method = str(request.method.value if request.method is not None else "").upper()
        if plural is not None:
            kind = "WATCH" if request.action == action.WATCH else method
            self.calls[(kind, plural, request.subresource or "")] += 1
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                sub = f"/{request.subresource}" if request.subresource else ""
                name = request.name
                if name is None and isinstance(data, dict):  # a create names it in the body
                    name = (data.get("metadata") or {}).get("name")
                self.writes.append((method, plural, f"{name or ''}{sub}"))
        if isinstance(data, dict) and plural is not None and method in ("POST", "PUT", "PATCH"):
            _normalise(plural, data)
            if method != "PATCH":
                _default(plural, data, creating=method == "POST")
                _validate(plural, data)
        if method == "PUT" and plural is not None and request.name:
            if plural in self._denied:
                raise self._denied[plural]
            owners_before = _owner_uids(self._current(request))
            stored = await self._replace(request)
            if _owner_uids(stored) != owners_before:
                await self._collect_garbage()
            return aiohttp.web.json_response(stored)
        if request.action == action.WATCH and plural is not None:
            selector = request.params.get("labelSelector", "") if request.params else ""
            self.watch_selectors.append((plural, selector))
        if request.action in (action.CREATE, action.UPDATE) and plural in self._denied:
            raise self._denied[plural]
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
                    _validate(plural or "", merged)
                    if merged.get("spec") != current.get("spec"):
                        meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        owners_then = _owner_uids(self._current(request)) if request.name else None
        try:
            return await super()._handle(request)
        finally:
            # Dependents lose their owners only when an object goes or an update changes its
            # own ownerReferences; a full scan after every update made many routes slow.
            # (An update that removes the last finalizer of an object being deleted makes it go.)
            after = self._current(request) if request.action == action.UPDATE else None
            if request.action == action.DELETE or (
                request.action == action.UPDATE
                and (after is None or _owner_uids(after) != owners_then)
            ):
                await self._collect_garbage()

    async def _serve_fetch(self, request: Any) -> Any:
        """GET of one object by its key: a dict lookup (kmock scans every stored object)."""
        if request.resource is None or request.name is None:
            return await super()._serve_fetch(request)
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise KubernetesObjectNotFoundError()
            return self._objects[key].raw

    async def _replace(self, request: Any) -> dict[str, Any]:
        """PUT: the whole object from the request, if it was read at the current version."""
        data = copy.deepcopy(request.data)
        plural = request.resource.plural
        async with self._lock:
            key = (request.resource, request.namespace, request.name)
            if key not in self._objects or self._objects[key].deleted:
                raise KubernetesError(
                    status=404, reason="NotFound", message=f'{plural} "{request.name}" not found'
                )
            current: dict[str, Any] = self._objects[key].raw
            meta = data.setdefault("metadata", {})
            sent = meta.get("resourceVersion")
            if not sent:
                raise KubernetesError(
                    status=422,
                    reason="Invalid",
                    message="metadata.resourceVersion: Invalid value: 0x0: must be specified "
                    "for an update",
                )
            if sent != current["metadata"].get("resourceVersion"):
                raise KubernetesError(
                    status=409,
                    reason="Conflict",
                    message=f'Operation cannot be fulfilled on {plural} "{request.name}": the '
                    "object has been modified; please apply your changes to the latest "
                    "version and try again",
                )
            for owned in ("uid", "creationTimestamp", "generation", "namespace", "name"):
                if owned in current["metadata"]:
                    meta[owned] = current["metadata"][owned]
            if plural in WITH_STATUS:
                data.pop("status", None)
                if "status" in current:
                    data["status"] = copy.deepcopy(current["status"])
            if data == current:
                return current  # a no-op update is not written: same resourceVersion, no event
            if data.get("spec") != current.get("spec"):
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
            meta["resourceVersion"] = str(next(self._versions))
            self._objects[key].create(data)
            await self._buses[request.resource].put({"type": "MODIFIED", "object": data})
            return data

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


def _pod_specs(plural: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec(s) inside an object or patch of `plural` (present ones only)."""
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return []
    if plural == "pods":
        return [spec]
    template = spec.get("template")
    if plural == "deployments" and isinstance(template, dict):
        pod = template.get("spec")
        return [pod] if isinstance(pod, dict) else []
    return []


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for field in ("initContainers", "containers")
        for c in pod.get(field) or []
        if isinstance(c, dict)
    ]


def _normalise(plural: str, data: dict[str, Any]) -> None:
    """Quantities in their canonical form, as the API server stores them."""
    for pod in _pod_specs(plural, data):
        for container in _containers(pod):
            for part in ("requests", "limits"):
                amounts = (container.get("resources") or {}).get(part)
                if isinstance(amounts, dict):
                    for name, value in amounts.items():
                        if value is not None:
                            amounts[name] = canonical(value)
        for volume in pod.get("volumes") or []:
            empty_dir = volume.get("emptyDir") if isinstance(volume, dict) else None
            if isinstance(empty_dir, dict) and empty_dir.get("sizeLimit") is not None:
                empty_dir["sizeLimit"] = canonical(empty_dir["sizeLimit"])


def _default(plural: str, data: dict[str, Any], creating: bool) -> None:
    """A few of the server's defaults for a whole object (create or update)."""
    for pod in _pod_specs(plural, data):
        pod.setdefault("restartPolicy", "Always")
        pod.setdefault("dnsPolicy", "ClusterFirst")
        pod.setdefault("schedulerName", "default-scheduler")
        for container in _containers(pod):
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
    if plural == "services" and isinstance(data.get("spec"), dict):
        spec = data["spec"]
        spec.setdefault("sessionAffinity", "None")
        if creating and spec.get("type", "ClusterIP") == "ClusterIP":
            n = next(_ADDRESSES)
            spec.setdefault("clusterIP", f"10.96.{n // 250}.{n % 250}")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))


def _validate(plural: str, data: dict[str, Any]) -> None:
    """The real server's check that every mounted volume is declared by the pod."""
    for pod in _pod_specs(plural, data):
        declared = {v.get("name") for v in pod.get("volumes") or [] if isinstance(v, dict)}
        for field in ("initContainers", "containers"):
            for i, container in enumerate(pod.get(field) or []):
                for j, mount in enumerate(container.get("volumeMounts") or []):
                    if mount.get("name") not in declared:
                        raise KubernetesError(
                            status=422,
                            reason="Invalid",
                            message=f"{plural} is invalid: spec.template.spec.{field}[{i}]"
                            f'.volumeMounts[{j}].name: Not found: "{mount.get("name")}"',
                        )


def _owner_uids(obj: dict[str, Any] | None) -> frozenset[str]:
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return frozenset(str(ref.get("uid")) for ref in refs)


def _selector(request: Any) -> dict[str, str]:
    raw = request.params.get("labelSelector", "") if request.params else ""
    pairs = [term.split("=", 1) for term in raw.split(",") if "=" in term]
    return {k.strip(): v.strip() for k, v in pairs}


def _matches(obj: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())
