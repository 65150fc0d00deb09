"""The Grafana dashboard the chart ships queries only metrics Gearshift really exports."""

from __future__ import annotations

import json
import re

from gearshift.dev.metrics_doc import render as metrics_table
from tests.helm.chart import component_name, find, objects, render

METRIC = re.compile(r"\b(gearshift_[a-z_]+?)(?:_bucket|_sum|_count)?\b(?=[{\[ )])")


def test_dashboard_configmap_holds_a_grafana_dashboard() -> None:
    objs = objects(render())
    cm = find(objs, "ConfigMap", component_name("dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["gearshift.json"])
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in ("Route mix", "Cache hit rate", "Latency by tier", "Tokens/s by tenant"):
        assert any(t.startswith(wanted) for t in titles), titles
    assert any(t.startswith("Cost by tenant") for t in titles)


def test_every_dashboard_query_uses_an_exported_metric() -> None:
    cm = find(objects(render()), "ConfigMap", component_name("dashboard"))
    dashboard = json.loads(cm["data"]["gearshift.json"])
    exported = set(re.findall(r"`(gearshift_[a-z_]+)`", metrics_table()))
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in METRIC.findall(target["expr"])
    }
    assert used, "no queries found"
    unknown = {n for n in used if n not in exported and f"{n}_total" not in exported}
    assert not unknown, f"dashboard queries metrics nobody exports: {sorted(unknown)}"


def test_dashboard_can_be_turned_off() -> None:
    objs = objects(render({"grafanaDashboard": {"enabled": False}}))
    assert not [
        o for o in objs if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]
    ]
