"""docs/metrics.md is generated from the metric definitions and must be current."""

from __future__ import annotations

from gearshift.dev.metrics_doc import DOC, render


def test_metrics_page_is_current() -> None:
    assert DOC.read_text() == render(), "run: python -m gearshift.dev.metrics_doc"


def test_every_service_documents_its_metrics() -> None:
    table = render()
    for service in ("router", "cache", "slm", "proxy", "operator", "every service"):
        assert f"| {service} | `gearshift_" in table
