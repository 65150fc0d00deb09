"""The operator's own Prometheus metrics (served on operator_metrics_port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge


class _DesiredGauge:
    """Desired replicas per route, with removal when a route is deleted."""

    def __init__(self) -> None:
        self._gauge = Gauge(
            "gearshift_operator_route_desired_replicas",
            "Replicas the autoscaler wants for a route.",
            ["namespace", "route"],
        )

    def labels(self, namespace: str, route: str) -> Gauge:
        return self._gauge.labels(namespace=namespace, route=route)

    def remove_route(self, namespace: str, route: str) -> None:
        try:
            self._gauge.remove(namespace, route)
        except KeyError:
            pass


RECONCILES = Counter(
    "gearshift_operator_reconciles_total",
    "Route reconciliations by outcome (changed, unchanged, invalid).",
    ["result"],
)
SCALES = Counter(
    "gearshift_operator_scale_events_total",
    "Replica changes made by the autoscaler.",
    ["direction"],
)


class _Runs:
    """Route handler runs: a Prometheus counter plus a readable total for the probe."""

    def __init__(self) -> None:
        self.count = 0
        self._counter = Counter(
            "gearshift_operator_route_handler_runs_total", "Route create/update/resume runs."
        )

    def inc(self) -> None:
        self.count += 1
        self._counter.inc()


ROUTE_RUNS = _Runs()
DESIRED = _DesiredGauge()
