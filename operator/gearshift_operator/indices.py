"""The operator's watch caches: kopf indices of its routes, their children and their pods.

kopf already watches routes and children (the handlers need the events); an index keeps
the last object of each watch in memory, so a reconcile reads nothing from the API server:
API load per reconcile does not grow with the number of routes. kopf fills every index
from its initial list before any handler runs, so a cache is complete from the start.

A cache can lag a write by a watch event. That is safe: writes go with the cached
object's resourceVersion, and the API server refuses a stale one (409), after which the
operator reads that object afresh (apply.py). To not pay that refusal after each of its
own writes, the operator remembers what it wrote (`wrote`) and reads that instead, until
the cache has moved past the version it held at the time of the write.

The indices are handed to the startup handler, which binds them here (`CACHES.bind`):
code outside kopf's handlers (the autoscaler's tasks) reads them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from gearshift.routes.model_route import GROUP, PLURAL, VERSION
from gearshift_operator import children

MANAGED = {"app.kubernetes.io/managed-by": children.MANAGED_BY}
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED.items())
INSTANCE_LABEL = "app.kubernetes.io/instance"
# Model-server pods, as the Deployments select them (name + instance = the route).
POD_LABELS = {"app.kubernetes.io/name": children.APP_NAME}
POD_SELECTOR = ",".join(f"{k}={v}" for k, v in POD_LABELS.items())
Key = tuple[str, str]
Manifest = dict[str, Any]


def _snapshot(body: kopf.Body) -> Manifest:
    """The object as the watch delivered it (kopf reuses its Body views across events)."""
    return dict(body)


def _own(namespace: str | None, name: str | None, body: kopf.Body) -> dict[Key, Manifest] | None:
    if namespace is None or name is None:
        return None
    return {(namespace, name): _snapshot(body)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
def deployment_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return _own(namespace, name, body)


@kopf.index("v1", "services", labels=MANAGED)
def service_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return _own(namespace, name, body)


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
def pdb_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return _own(namespace, name, body)


@kopf.index("v1", "configmaps", labels=MANAGED)
def configmap_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return _own(namespace, name, body)


@kopf.index(GROUP, VERSION, PLURAL)
def route_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return _own(namespace, name, body)


@kopf.index(GROUP, VERSION, PLURAL)
def fallback_index(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> Any:
    """(namespace, fallback) -> the names of the routes that fall back to it."""
    routing = spec.get("routing") or {}
    fallback = routing.get("fallback") if isinstance(routing, Mapping) else None
    return {(namespace, str(fallback)): name} if fallback and namespace else None


@kopf.index("v1", "pods", labels=POD_LABELS)
def pod_index(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
    """(namespace, route) -> the route's model-server pods."""
    instance = labels.get(INSTANCE_LABEL)
    return {(namespace, instance): _snapshot(body)} if instance and namespace else None


def _version(obj: Manifest) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return str(version) if version is not None else None


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
def job_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return _own(namespace, name, body)


@kopf.index("v1", "pods", labels=MANAGED)
def route_pod_index(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
    """(namespace, route) -> every pod of the route: its model servers and staging Jobs'."""
    route = labels.get(children.ROUTE_LABEL)
    return {(namespace, route): _snapshot(body)} if route and namespace else None


# Which index holds each child kind.
CHILD_INDEX = {
    "Deployment": "deployment_index",
    "Service": "service_index",
    "PodDisruptionBudget": "pdb_index",
    "ConfigMap": "configmap_index",
    "Job": "job_index",
}
INDEX_NAMES = (
    *CHILD_INDEX.values(),
    "route_index",
    "fallback_index",
    "pod_index",
    "route_pod_index",
)


class Caches:
    """Lookups in the indices of the running operator."""

    def __init__(self) -> None:
        self._indices: dict[str, Any] = {}
        # (kind, namespace, name) -> (the object as written, the cache's version then).
        self._written: dict[tuple[str, str, str], tuple[Manifest, str | None]] = {}

    def bind(self, handler_kwargs: Mapping[str, Any]) -> None:
        """Keeps the live index views kopf passes to the startup handler."""
        self._indices = {name: handler_kwargs[name] for name in INDEX_NAMES}
        self._written.clear()

    def wrote(self, kind: str, namespace: str, name: str, obj: Manifest) -> None:
        """The operator just wrote (or freshly read) `obj`: read it until the cache catches up."""
        cached = self._one(CHILD_INDEX[kind], (namespace, name))
        if cached is not None and _version(cached) == _version(obj):
            self._written.pop((kind, namespace, name), None)
            return
        self._written[(kind, namespace, name)] = (obj, _version(cached) if cached else None)

    def forget(self, namespace: str, name: str) -> None:
        """A deleted route's remembered writes go."""
        for key in [k for k in self._written if k[1:] == (namespace, name)]:
            del self._written[key]

    def _one(self, index: str, key: Key) -> Manifest | None:
        store = self._indices[index].get(key)
        for value in store or ():
            return dict(value)
        return None

    def child(self, kind: str, namespace: str, name: str) -> Manifest | None:
        cached = self._one(CHILD_INDEX[kind], (namespace, name))
        written = self._written.get((kind, namespace, name))
        if written is None:
            return cached
        obj, version_then = written
        if (_version(cached) if cached is not None else None) != version_then:
            del self._written[(kind, namespace, name)]  # the cache has seen the write (or later)
            return cached
        return dict(obj)

    def route(self, namespace: str, name: str) -> Manifest | None:
        return self._one("route_index", (namespace, name))

    def dependents(self, namespace: str, name: str) -> list[Manifest]:
        """The routes whose spec.routing.fallback is `name`."""
        names = sorted(set(self._indices["fallback_index"].get((namespace, name)) or ()))
        found = (self.route(namespace, other) for other in names)
        return [route for route in found if route is not None]

    def pods(self, namespace: str, route: str) -> list[Manifest]:
        return [dict(pod) for pod in self._indices["pod_index"].get((namespace, route)) or ()]

    def route_pods(self, namespace: str, route: str) -> list[Manifest]:
        """Model-server and weight-staging pods of the route (pod status roll-up)."""
        found = self._indices["route_pod_index"].get((namespace, route)) or ()
        return [dict(pod) for pod in found]


CACHES = Caches()
