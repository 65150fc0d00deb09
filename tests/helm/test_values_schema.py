"""values.schema.json refuses bad values before anything renders, naming the bad key."""

from __future__ import annotations

from typing import Any

import pytest
from helm_python.chart import Chart
from helm_python.errors import HelmError

from tests.helm.chart import CHART_DIR, render

BAD_VALUES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "replicas not a number",
        {"router": {"replicas": "two"}},
        ["/router/replicas", "got string, want integer"],
    ),
    ("negative replicas", {"proxy": {"replicas": -1}}, ["/proxy/replicas", "minimum"]),
    (
        "unknown cache backend",
        {"cache": {"backend": "redis"}},
        ["/cache/backend", "'inprocess', 'pgvector'"],
    ),
    (
        "negative GPU count",
        {"sizeClasses": {"small": {"gpu": -1}}},
        ["/sizeClasses/small/gpu", "minimum: got -1, want 0"],
    ),
    (
        "GPU count as text",
        {"sizeClasses": {"large": {"gpu": "four"}}},
        ["/sizeClasses/large/gpu", "want integer"],
    ),
    (
        "size class missing fields",
        {"sizeClasses": {"huge": {"gpu": 8}}},
        ["/sizeClasses/huge", "missing properties", "gpuResource"],
    ),
    (
        "size class field misspelt",
        {"sizeClasses": {"small": {"gpuCount": 2}}},
        ["/sizeClasses/small", "'gpuCount' not allowed"],
    ),
    (
        "bad memory quantity",
        {"sizeClasses": {"small": {"memory": "16 gigs"}}},
        ["/sizeClasses/small/memory"],
    ),
    (
        "pgvector without its secret",
        {"cache": {"backend": "pgvector"}},
        ["/cache/pgvector/existingSecret", "minLength"],
    ),
    (
        "scaled-out in-process cache",
        {"cache": {"replicas": 3}},
        ["/cache/backend", "value must be 'pgvector'"],
    ),
    (
        "proxy on without models",
        {"proxy": {"enabled": True}},
        ["/proxy/config", "missing property 'models'"],
    ),
    (
        "two operators without leader election",
        {"operator": {"replicas": 2, "leaderElection": {"enabled": False}}},
        ["/operator/leaderElection/enabled", "value must be true"],
    ),
    ("misspelt top-level key", {"routr": {"replicas": 2}}, ["'routr' not allowed"]),
    ("misspelt component key", {"router": {"replica": 2}}, ["/router", "'replica' not allowed"]),
    (
        "settings key not snake_case",
        {"router": {"settings": {"grpcPort": 1}}},
        ["/router/settings", "'grpcPort' not allowed"],
    ),
    (
        "port out of range",
        {"cache": {"settings": {"grpc_port": 70000}}},
        ["/cache/settings/grpc_port", "maximum"],
    ),
    (
        "bad log level",
        {"commonSettings": {"log_level": "LOUD"}},
        ["/commonSettings/log_level", "'DEBUG', 'INFO', 'WARNING', 'ERROR'"],
    ),
    (
        "OTLP endpoint with a scheme",
        {"otel": {"endpoint": "http://collector:4317"}},
        ["/otel/endpoint", "does not match pattern"],
    ),
    (
        "unknown service type",
        {"router": {"service": {"type": "Ingress"}}},
        ["/router/service/type", "'ClusterIP', 'NodePort', 'LoadBalancer'"],
    ),
    ("bad pull policy", {"image": {"pullPolicy": "Sometimes"}}, ["/image/pullPolicy"]),
    (
        "upstream secret without key",
        {"proxy": {"upstreamSecrets": [{"name": "a", "existingSecret": "s"}]}},
        ["/proxy/upstreamSecrets/0", "missing property 'key'"],
    ),
]


@pytest.mark.parametrize(("case", "values", "expected"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_refused_with_a_clear_message(
    case: str, values: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(HelmError) as caught:
        render(values)
    message = str(caught.value)
    for fragment in expected:
        assert fragment in message, f"{case}: {fragment!r} not in:\n{message}"


def test_defaults_and_good_overrides_are_accepted() -> None:
    with Chart.load(CHART_DIR) as chart:
        chart.validate_schema({})
        chart.validate_schema(
            {
                "router": {"settings": {"cascade": True, "request_timeout_s": 30.5}},
                "cache": {
                    "backend": "pgvector",
                    "replicas": 2,
                    "pgvector": {"existingSecret": "pg", "key": "url"},
                },
                "sizeClasses": {
                    "tiny": {
                        "gpu": 0,
                        "gpuResource": "nvidia.com/gpu",
                        "cpu": "500m",
                        "memory": "2Gi",
                    }
                },
                "operator": {"replicas": 2, "leaderElection": {"enabled": True}},
            }
        )
