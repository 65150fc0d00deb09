"""`helm upgrade` applies the new CRD schemas, so routes keep the fields added since.

Helm installs a chart's crds/ folder once and never upgrades it; the API server then prunes,
with the old structural schema, every field the project added since from each route written
or read. The chart therefore renders its CRDs from files/crds/ as templates (kept on
uninstall). These tests upgrade from the ModelRoute CRD of an earlier release
(fixtures/modelroutes-dd8baf8.yaml, installed back then from crds/) the way Helm and the API
server do it: Helm's upgrade render, Helm's ownership check for objects the release did not
create, and the API server's pruning (tests/operator/pruning.py).
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python.chart import Chart

from tests.helm.chart import (
    CHART_DIR,
    CRD_DIR,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Manifest,
    by_kind,
    objects,
    objects_of,
    render,
)
from tests.operator import crd_check
from tests.operator.pruning import prune_object, storage_schema

FIXTURES = Path(__file__).parent / "fixtures"
PREVIOUS_CRD = FIXTURES / "modelroutes-dd8baf8.yaml"
GROUP = "gearshift.dev"
KEEP = "helm.sh/resource-policy"

# A route that uses fields the previous release's schema does not know.
ROUTE: Manifest = {
    "apiVersion": "gearshift.dev/v1alpha1",
    "kind": "ModelRoute",
    "metadata": {"name": "qwen-large", "namespace": NAMESPACE, "labels": {"team": "search"}},
    "spec": {
        "tier": "llm",
        "model": {
            "source": "hf://Qwen/Qwen2.5-7B-Instruct",
            "servedName": "qwen2.5-7b-instruct",
            "tokenSecretRef": {"name": "hf-token", "key": "token"},
            "cacheClaim": "hf-cache",
        },
        "sizeClass": "large",
        "engine": {"maxModelLen": 8192},
        "replicas": {"min": 1, "max": 4},
        "routing": {"priority": 1},
        "capabilities": {"tools": True, "toolParser": "hermes"},
        "lifecycle": {"drainSeconds": 300, "startupSeconds": 1200},
        "podTemplate": {
            "spec": {
                "priorityClassName": "gpu-high",
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm"}],
            }
        },
    },
}
NEW_FIELDS = [
    ("spec", "model", "tokenSecretRef"),
    ("spec", "model", "cacheClaim"),
    ("spec", "capabilities"),
    ("spec", "lifecycle"),
    ("spec", "podTemplate"),
]


def _load(path: Path) -> Manifest:
    doc: Manifest = yaml.safe_load(path.read_text())
    return doc


def _without(obj: Manifest, paths: list[tuple[str, ...]]) -> Manifest:
    out = copy.deepcopy(obj)
    for *parents, key in paths:
        node = out
        for p in parents:
            node = node[p]
        del node[key]
    return out


class Cluster:
    """CRDs and the routes stored under them, with the API server's pruning on write and read."""

    def __init__(self) -> None:
        self.crds: dict[str, Manifest] = {}
        self._routes: dict[str, Manifest] = {}

    def _schema(self) -> dict[str, Any]:
        return storage_schema(self.crds[f"modelroutes.{GROUP}"])

    def apply_route(self, route: Manifest) -> None:
        self._routes[route["metadata"]["name"]] = prune_object(route, self._schema())

    def get_route(self, name: str) -> Manifest:
        # Objects are decoded from etcd with the CRD's current schema: pruned again.
        return prune_object(self._routes[name], self._schema())


def _ownership_errors(live: Manifest) -> list[str]:
    """Helm's `checkOwnership`: why it refuses to adopt an object its release did not create."""
    labels = live["metadata"].get("labels") or {}
    annotations = live["metadata"].get("annotations") or {}
    required = [
        ("label", labels, "app.kubernetes.io/managed-by", "Helm"),
        ("annotation", annotations, "meta.helm.sh/release-name", RELEASE),
        ("annotation", annotations, "meta.helm.sh/release-namespace", NAMESPACE),
    ]
    errors = []
    for what, meta, key, value in required:
        if key not in meta:
            errors.append(f'{what} validation error: missing key "{key}": must be set to "{value}"')
        elif meta[key] != value:
            errors.append(f'{what} validation error: key "{key}" must equal "{value}"')
    return errors


def _helm_upgrade(cluster: Cluster, values: dict[str, Any] | None = None) -> None:
    """What `helm upgrade` does with the CRDs: render templates (crds/ is skipped on upgrade),
    refuse objects it may not adopt, then write them with its ownership metadata."""
    with Chart.load(CHART_DIR) as chart:
        assert chart.crds == [], "crds/ files are never upgraded"
        rendered = chart.render(
            values=values or {}, name=RELEASE, namespace=NAMESPACE, revision=2, is_upgrade=True
        )
    crds = by_kind(objects(rendered), "CustomResourceDefinition")
    for crd in crds:
        live = cluster.crds.get(crd["metadata"]["name"])
        if live is not None and (errors := _ownership_errors(live)):
            raise RuntimeError(
                f"CustomResourceDefinition {crd['metadata']['name']!r} exists and cannot be "
                "imported into the current release: invalid ownership metadata; "
                + "; ".join(errors)
            )
    for crd in crds:
        applied = copy.deepcopy(crd)
        applied["metadata"].setdefault("annotations", {}).update(
            {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE}
        )
        cluster.crds[crd["metadata"]["name"]] = applied


def _adopt(cluster: Cluster) -> None:
    """The one-time commands docs/helm.md gives for CRDs a chart once installed from crds/."""
    for crd in cluster.crds.values():
        crd["metadata"].setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
        crd["metadata"].setdefault("annotations", {}).update(
            {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE}
        )


def _previous_release() -> Cluster:
    """A cluster as the earlier release left it: its CRD as crds/ installed it, verbatim."""
    cluster = Cluster()
    previous = _load(PREVIOUS_CRD)
    cluster.crds[previous["metadata"]["name"]] = previous
    return cluster


def test_the_route_is_valid_under_the_new_crd() -> None:
    assert crd_check.validate(ROUTE) == []


def test_the_previous_crd_prunes_the_fields_added_since() -> None:
    """Today's failure: the CRD is left as it was, and new fields vanish on write."""
    cluster = _previous_release()
    cluster.apply_route(ROUTE)
    assert cluster.get_route("qwen-large") == _without(ROUTE, NEW_FIELDS)


def test_chart_upgrade_from_the_previous_release_keeps_new_route_fields() -> None:
    cluster = _previous_release()
    old_route = _without(ROUTE, NEW_FIELDS)
    cluster.apply_route(old_route)

    # The earlier release's CRD came from crds/, without Helm's ownership metadata.
    with pytest.raises(RuntimeError, match=re.escape('missing key "meta.helm.sh/release-name"')):
        _helm_upgrade(cluster)
    _adopt(cluster)
    _helm_upgrade(cluster)

    assert {f"modelroutes.{GROUP}", f"datasources.{GROUP}"} <= set(cluster.crds)
    source = _load(CRD_DIR / f"modelroutes.{GROUP}.yaml")
    assert cluster.crds[f"modelroutes.{GROUP}"]["spec"] == source["spec"]
    # What was stored before the upgrade reads back whole ...
    assert cluster.get_route("qwen-large") == old_route
    # ... and the new fields now survive the write and every later read.
    cluster.apply_route(ROUTE)
    assert cluster.get_route("qwen-large") == ROUTE
    # A second upgrade finds the CRDs its own release owns.
    _helm_upgrade(cluster)
    assert cluster.get_route("qwen-large") == ROUTE


def _fields(schema: dict[str, Any], path: str = "") -> set[str]:
    out = {path}
    for key, sub in (schema.get("properties") or {}).items():
        out |= _fields(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        out |= _fields(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out |= _fields(schema["additionalProperties"], f"{path}.*")
    return out


def test_the_new_schema_keeps_every_field_of_the_previous_release() -> None:
    """v1alpha1 has no conversion: a field dropped from the schema is pruned from every route."""
    old = _fields(storage_schema(_load(PREVIOUS_CRD)))
    new = _fields(storage_schema(_load(CRD_DIR / f"modelroutes.{GROUP}.yaml")))
    assert old - new == set()
    assert {".spec.lifecycle", ".spec.podTemplate", ".spec.model.cacheClaim"} <= new - old


def _gearshift_crds(objs: list[Manifest]) -> dict[str, Manifest]:
    return {
        o["metadata"]["name"]: o
        for o in by_kind(objs, "CustomResourceDefinition")
        if o["spec"]["group"] == GROUP
    }


def test_rendered_crds_are_their_source_files() -> None:
    """One copy of each schema: the template adds labels and the keep policy, nothing else."""
    rendered = _gearshift_crds(objects_of("default"))
    sources = [_load(p) for p in sorted(CRD_DIR.glob("*.yaml"))]
    assert sorted(rendered) == sorted(s["metadata"]["name"] for s in sources)
    for source in sources:
        crd = rendered[source["metadata"]["name"]]
        assert {k: v for k, v in crd.items() if k != "metadata"} == {
            k: v for k, v in source.items() if k != "metadata"
        }
        assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
        assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert crd["metadata"]["annotations"] == {
            **source["metadata"].get("annotations", {}),
            KEEP: "keep",
        }


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_rendered_crd_is_kept_on_uninstall(value_set: str) -> None:
    """Deleting a CRD deletes its objects: every route, and with them every model server."""
    crds = by_kind(objects_of(value_set), "CustomResourceDefinition")
    assert crds
    for crd in crds:
        assert crd["metadata"]["annotations"][KEEP] == "keep", crd["metadata"]["name"]


def test_crds_install_false_renders_no_crds_and_changes_nothing_else() -> None:
    with_crds = render({})
    without = render({"crds": {"install": False}})
    assert _gearshift_crds(objects(without)) == {}
    assert without.pop("gearshift/templates/crds.yaml").strip() == ""
    with_crds.pop("gearshift/templates/crds.yaml")
    assert without == with_crds


def test_reused_values_from_before_the_crds_key_still_render_the_crds(tmp_path: Path) -> None:
    """`helm upgrade --reuse-values` renders with the old release's values, which lack `crds`."""
    chart_dir = tmp_path / "gearshift"
    shutil.copytree(CHART_DIR, chart_dir)
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    del values["crds"]
    (chart_dir / "values.yaml").write_text(yaml.safe_dump(values))
    with Chart.load(chart_dir) as chart:
        rendered = chart.render(values={}, name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
    assert sorted(_gearshift_crds(objects(rendered))) == [
        f"datasources.{GROUP}",
        f"modelroutes.{GROUP}",
    ]


class _StrictLoader(yaml.SafeLoader):
    """Refuses a key twice in one mapping (PyYAML keeps the last; the copies may differ)."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(k) for k, _ in node.value]
    twice = {k for k in keys if keys.count(k) > 1}
    if twice:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {sorted(twice)}", node.start_mark
        )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


@pytest.mark.parametrize("path", sorted(CRD_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_crd_files_have_no_duplicate_keys(path: Path) -> None:
    doc = yaml.load(path.read_text(), Loader=_StrictLoader)
    assert doc["kind"] == "CustomResourceDefinition"
