"""Rendering the Gearshift chart offline, for the chart tests.

`helm-python-sdk` embeds Helm's Go SDK, so `render()` is exactly what `helm template`
(and the templating step of `helm install`) would produce, values schema included.
Renders are cached per value set: templates are pure functions of their values.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from helm_python.chart import Chart, values_from_yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "gearshift"
# The CRDs' one copy: templates/crds.yaml renders these files (docs/helm.md, Upgrading).
CRD_DIR = CHART_DIR / "files" / "crds"
CRD_FILE = CRD_DIR / "modelroutes.gearshift.dev.yaml"
EXAMPLES_DIR = REPO / "examples" / "modelroutes"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*.yaml"))
RELEASE = "gs"
NAMESPACE = "ai"

# The value sets every structural test runs on: the defaults plus each ci/*.yaml file.
VALUE_SETS = ["default", *(p.name for p in CI_VALUES)]

Manifest = dict[str, Any]


def ci_values(name: str) -> dict[str, Any]:
    """The values of one named set ("default" is the chart's own values.yaml alone)."""
    if name == "default":
        return {}
    return values_from_yaml((CHART_DIR / "ci" / name).read_text())


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, for release `gs` in namespace `ai`."""
    with Chart.load(CHART_DIR) as chart:
        return chart.render(values=values or {}, name=RELEASE, namespace=NAMESPACE)


def objects(rendered: dict[str, str]) -> list[Manifest]:
    """Every Kubernetes object in a render (NOTES.txt and empty documents left out)."""
    out: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append(doc)
    return out


@functools.cache
def _render_set_json(name: str) -> str:
    return json.dumps(render(ci_values(name)))


def render_set(name: str) -> dict[str, str]:
    return dict(json.loads(_render_set_json(name)))


def objects_of(name: str) -> list[Manifest]:
    return objects(render_set(name))


def by_kind(objs: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objs if o["kind"] == kind]


def find(objs: list[Manifest], kind: str, name: str) -> Manifest:
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"no {kind} named {name!r} in the render")


def component_name(component: str) -> str:
    return f"{RELEASE}-gearshift-{component}"


def containers(pod_spec: Manifest) -> Iterator[Manifest]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec.get("containers", [])


def workloads(objs: list[Manifest]) -> list[Manifest]:
    """Everything that runs containers: controllers and bare pods (the `helm test` pod)."""
    kinds = ("Deployment", "StatefulSet", "DaemonSet", "Job", "Pod")
    return [o for o in objs if o["kind"] in kinds]


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = (
        workload["spec"] if workload["kind"] == "Pod" else workload["spec"]["template"]["spec"]
    )
    return spec


def env_of(container: Manifest) -> dict[str, str]:
    """Plain env vars of a container (valueFrom entries map to "")."""
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector picks an object with these labels."""
    return all(labels.get(k) == v for k, v in selector.items())


def crd() -> Manifest:
    doc: Manifest = yaml.safe_load(CRD_FILE.read_text())
    return doc
