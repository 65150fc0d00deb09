"""Ready pod addresses from EndpointSlices (pure function, the API's conventions)."""

from __future__ import annotations

from gearshift.router.table.endpoint_slices import pod_endpoints, with_pod_endpoints


def _slice(service: str, endpoints: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {
        "metadata": {"namespace": "ns", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 50051}],
        "endpoints": endpoints,
        **extra,
    }


def test_only_ready_pods_of_the_service_on_the_grpc_port() -> None:
    slices = [
        _slice(
            "r",
            [
                {"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.1"]},  # unset ready means ready
                {"addresses": ["10.0.0.3"], "conditions": {"ready": False}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": True, "terminating": True}},
            ],
        ),
        _slice("other", [{"addresses": ["10.0.0.9"]}]),
        _slice("r", [{"addresses": ["fd00::1"]}], addressType="IPv6"),
        _slice("r", [{"addresses": ["a.example"]}], addressType="FQDN"),
        _slice("r", [{"addresses": ["10.0.0.8"]}], ports=[{"name": "metrics", "port": 9090}]),
    ]
    assert pod_endpoints(slices, "ns", "r") == [
        "10.0.0.1:50051",
        "10.0.0.2:50051",
        "[fd00::1]:50051",
    ]
    assert pod_endpoints(slices, "elsewhere", "r") == []


def test_explicit_endpoints_and_podless_routes_are_left_alone() -> None:
    slices = [_slice("r", [{"addresses": ["10.0.0.1"]}])]
    route = {"metadata": {"name": "r", "namespace": "ns"}, "status": {"endpoint": "r.ns.svc:1"}}
    assert with_pod_endpoints(route, slices)["status"]["endpoint"] == "10.0.0.1:50051"
    assert route["status"]["endpoint"] == "r.ns.svc:1"  # the input is not changed
    explicit = {**route, "spec": {"routing": {"endpoint": "host:1"}}}
    assert with_pod_endpoints(explicit, slices)["status"]["endpoint"] == "r.ns.svc:1"
    assert with_pod_endpoints(route, [])["status"]["endpoint"] == "r.ns.svc:1"
