"""Keeps the routing table in step with `ModelRoute` objects in a Kubernetes cluster.

List, then watch from the list's resourceVersion with a server-side timeout and a client
read timeout (stalled watches are a known failure mode), re-listing on 410 Gone or any
error after a short back-off. The blocking `kubernetes` client runs in a worker thread;
every change rebuilds the table from the full set of objects, so a missed event heals at
the next re-list.

A third list+watch follows the EndpointSlices of the operator's Services: a route served
by several pods is routed to each ready pod directly (one channel per pod, a pick per
request by load), not through the Service's single virtual IP. Without permission to read
EndpointSlices the router keeps using the Service address.

Tested against kmock's emulated API (list, watch ADDED/MODIFIED/DELETED); not yet against a
real API server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

from gearshift.router.table.endpoint_slices import SLICE_SELECTOR, with_pod_endpoints
from gearshift.router.table.routing_table import (
    ColdRoute,
    RoutingTable,
    cold_routes,
    routes_from_objects,
    sources_from_objects,
)
from gearshift.routes import ModelRoute
from gearshift.routes.data_source import PLURAL as SOURCES_PLURAL
from gearshift.routes.data_source import DataSource
from gearshift.routes.model_route import DEMAND_ANNOTATION, GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

# (group, version, plural) of what the router follows.
ROUTES = (GROUP, VERSION, PLURAL)
SOURCES = (GROUP, VERSION, SOURCES_PLURAL)
SLICES = ("discovery.k8s.io", "v1", "endpointslices")


class KubeRouteWatcher:
    """Watches ModelRoutes and DataSources in one namespace (or all, when it is empty).

    One thread per resource kind (and one for EndpointSlices), each with its own list+watch
    loop; any change rebuilds the table from every kind's current objects.
    """

    def __init__(
        self,
        table: RoutingTable,
        namespace: str,
        watch_timeout_s: int = 60,
        request_timeout_s: float = 10.0,
        kubeconfig: str = "",
    ) -> None:
        self.table = table
        self.namespace = namespace
        self.watch_timeout_s = watch_timeout_s
        self.request_timeout_s = request_timeout_s
        self.kubeconfig = kubeconfig
        self._objects: dict[str, dict[str, Any]] = {}
        self._sources: dict[str, dict[str, Any]] = {}
        self._slices: dict[str, dict[str, Any]] = {}
        self._synced: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._api: Any = None
        self.demand_interval_s = 30.0
        self._demanded: dict[str, float] = {}

    def _client(self) -> Any:
        """In-cluster service account, else the kubeconfig (explicit path or $KUBECONFIG)."""
        if self._api is None:
            from kubernetes import client, config

            if self.kubeconfig:
                api_client = config.new_client_from_config(config_file=self.kubeconfig)  # type: ignore[no-untyped-call]
            else:
                try:
                    config.load_incluster_config()  # type: ignore[no-untyped-call]
                except config.ConfigException:
                    # $KUBECONFIG as it is now: the client library reads it once, at import.
                    config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
                api_client = None
            self._api = client.CustomObjectsApi(api_client)
        return self._api

    def _list(self, what: tuple[str, str, str], selector: str) -> tuple[list[dict[str, Any]], str]:
        api = self._client()
        kwargs: dict[str, Any] = {"_request_timeout": self.request_timeout_s}
        if selector:
            kwargs["label_selector"] = selector
        if self.namespace:
            result = api.list_namespaced_custom_object(*what[:2], self.namespace, what[2], **kwargs)
        else:
            result = api.list_cluster_custom_object(*what, **kwargs)
        version = (result.get("metadata") or {}).get("resourceVersion") or ""
        return list(result.get("items") or []), str(version)

    def _apply(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            slices = list(self._slices.values())
            raw_routes = [with_pod_endpoints(o, slices) for o in self._objects.values()]
            raw_sources = list(self._sources.values())
            # Until both kinds are listed once, keep the other kind's current table entries.
            sources_known = SOURCES in self._synced
        objects = []
        for raw in raw_routes:
            try:
                objects.append(ModelRoute.model_validate(raw))
            except ValueError as exc:
                log.error("ignoring invalid ModelRoute %s: %s", raw.get("metadata", {}), exc)
        data_sources = []
        for raw in raw_sources:
            try:
                data_sources.append(DataSource.model_validate(raw))
            except ValueError as exc:
                log.error("ignoring invalid DataSource %s: %s", raw.get("metadata", {}), exc)
        routes = routes_from_objects(objects)
        sources = sources_from_objects(data_sources) if sources_known else None
        cold = cold_routes(objects)
        if not loop.is_closed():
            loop.call_soon_threadsafe(self.table.replace, routes, sources)
            loop.call_soon_threadsafe(self.table.set_cold, cold)

    def signal_demand(self, route: ColdRoute) -> None:
        """Asks the operator to wake a cold route: a timestamp in its demand annotation.

        At most once per `demand_interval_s` per route, off the event loop; a failed patch
        is logged and retried with the next request that wants the route.
        """
        now = time.monotonic()
        if now - self._demanded.get(route.name, -1e9) < self.demand_interval_s:
            return
        self._demanded[route.name] = now
        thread = threading.Thread(
            target=self._patch_demand, args=(route,), name="modelroute-demand", daemon=True
        )
        thread.start()

    def _patch_demand(self, route: ColdRoute) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"metadata": {"annotations": {DEMAND_ANNOTATION: stamp}}}
        try:
            self._client().patch_namespaced_custom_object(
                GROUP,
                VERSION,
                route.namespace or self.namespace or "default",
                PLURAL,
                route.name,
                body,
                _request_timeout=self.request_timeout_s,
            )
            log.info("asked cold route %s to scale up from zero", route.name)
        except Exception as exc:  # never fail a request over a wake-up signal
            self._demanded.pop(route.name, None)
            log.warning("could not signal demand for route %s: %s", route.name, exc)

    @staticmethod
    def _key(obj: dict[str, Any]) -> str:
        meta = obj.get("metadata", {})
        return f"{meta.get('namespace', '')}/{meta.get('name', '')}"

    def _follow(
        self,
        loop: asyncio.AbstractEventLoop,
        what: tuple[str, str, str],
        selector: str,
        store: dict[str, dict[str, Any]],
    ) -> None:
        """List, then watch `what` into `store`, rebuilding the table on every change."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        while not self._stop.is_set():
            try:
                items, version = self._list(what, selector)
                with self._lock:
                    store.clear()
                    store.update({self._key(o): o for o in items})
                    self._synced.add(what)
                self._apply(loop)
                while not self._stop.is_set():
                    w = watch.Watch()  # type: ignore[no-untyped-call]
                    api = self._client()
                    args: dict[str, Any] = {
                        "allow_watch_bookmarks": False,
                        "timeout_seconds": self.watch_timeout_s,
                        "_request_timeout": self.watch_timeout_s + self.request_timeout_s,
                    }
                    if version:
                        args["resource_version"] = version
                    if selector:
                        args["label_selector"] = selector
                    if self.namespace:
                        stream = w.stream(  # type: ignore[no-untyped-call]
                            api.list_namespaced_custom_object,
                            *what[:2],
                            self.namespace,
                            what[2],
                            **args,
                        )
                    else:
                        stream = w.stream(  # type: ignore[no-untyped-call]
                            api.list_cluster_custom_object, *what, **args
                        )
                    for event in stream:
                        if self._stop.is_set():
                            w.stop()  # type: ignore[no-untyped-call]
                            break
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            raise ApiException(status=obj.get("code", 500))
                        version = str(obj.get("metadata", {}).get("resourceVersion", version))
                        with self._lock:
                            if event["type"] == "DELETED":
                                store.pop(self._key(obj), None)
                            else:
                                store[self._key(obj)] = obj
                        self._apply(loop)
            except ApiException as exc:
                if what == SLICES and exc.status in (403, 404):
                    # No RBAC for EndpointSlices (or no such API): Service addresses it is.
                    log.warning("cannot read EndpointSlices (%s); routing via Services", exc.status)
                    return
                log.warning("%s watch restarting: %s", what[2], exc)
                self._stop.wait(2.0)
            except Exception as exc:  # 410 Gone, network errors: re-list after a pause
                log.warning("%s watch restarting: %s", what[2], exc)
                self._stop.wait(2.0)

    def start(self) -> None:
        # Daemon threads, not the default executor: a watch blocked in a read (up to its
        # timeout) must not hold up process exit.
        loop = asyncio.get_running_loop()
        follows = (
            (ROUTES, "", self._objects),
            (SOURCES, "", self._sources),
            (SLICES, SLICE_SELECTOR, self._slices),
        )
        for what, selector, store in follows:
            thread = threading.Thread(
                target=self._follow,
                args=(loop, what, selector, store),
                name=f"{what[2]}-watch",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 1.0)
        self._threads = []
