"""The ready pods behind a route's Service, from its EndpointSlices.

A Service's DNS name gives the router one HTTP/2 connection to one pod (kube-proxy balances
connections, not requests), so a route's other replicas would stay idle. The router reads
the Service's EndpointSlices instead and addresses each ready pod itself: one channel per
pod, and a pick per request by the pods' load reports (`RoutingTable.pick_endpoint`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# The operator's Services carry it and the EndpointSlice controller copies a Service's
# labels onto its slices: the watch asks the API server for these slices only.
SLICE_SELECTOR = "app.kubernetes.io/managed-by=gearshift-operator"


def _ready(endpoint: Mapping[str, Any]) -> bool:
    """Ready and not terminating; an unset `ready` means ready (the API's convention)."""
    conditions = endpoint.get("conditions") or {}
    return conditions.get("ready") is not False and not conditions.get("terminating")


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def pod_endpoints(
    slices: Iterable[Mapping[str, Any]], namespace: str, service: str, port_name: str = "grpc"
) -> list[str]:
    """`ip:port` of every ready pod of `namespace/service` on its `port_name` port, sorted."""
    found: set[str] = set()
    for item in slices:
        meta = item.get("metadata") or {}
        labels = meta.get("labels") or {}
        if meta.get("namespace") != namespace or labels.get(SERVICE_NAME_LABEL) != service:
            continue
        if item.get("addressType") not in ("IPv4", "IPv6"):
            continue
        ports = [p.get("port") for p in item.get("ports") or [] if p.get("name") == port_name]
        if not ports or not isinstance(ports[0], int):
            continue
        for endpoint in item.get("endpoints") or []:
            if _ready(endpoint):
                found.update(_address(ip, ports[0]) for ip in endpoint.get("addresses") or [])
    return sorted(found)


def with_pod_endpoints(
    route: Mapping[str, Any], slices: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The route object with status.endpoint set to its ready pods (comma-separated).

    Routes with an explicit spec.routing.endpoint, and routes whose Service has no ready
    pod in any slice (or whose slices the router may not read), are left as they are.
    """
    obj = dict(route)
    if ((obj.get("spec") or {}).get("routing") or {}).get("endpoint"):
        return obj
    meta = obj.get("metadata") or {}
    pods = pod_endpoints(slices, str(meta.get("namespace", "")), str(meta.get("name", "")))
    if pods:
        obj["status"] = {**(obj.get("status") or {}), "endpoint": ",".join(pods)}
    return obj
