"""ModelRoute metadata and DataSource objects: parsing, validation, the local routes file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gearshift.router.table.backends import BackendPool
from gearshift.router.table.routing_table import RoutesFileWatcher, RoutingTable
from gearshift.routes import load_routes
from gearshift.routes.data_source import DataSource, load_sources
from gearshift.routes.local import local_default_routes

SOURCE = {
    "apiVersion": "gearshift.dev/v1alpha1",
    "kind": "DataSource",
    "metadata": {"name": "runbooks"},
    "spec": {
        "description": "Runbooks of the platform team: incidents, on-call, cache and GPU outages",
        "examples": ["What does the runbook say about a cache outage?"],
        "excludes": ["Write me a poem"],
        "retriever": {"endpoint": "127.0.0.1:7000"},
        "search": {"topK": 3},
    },
}


def _mixed_file() -> str:
    slm, llm = local_default_routes("127.0.0.1:1", "small", "127.0.0.1:2", "large")
    slm["spec"]["description"] = "Short everyday questions"
    slm["spec"]["examples"] = ["What is the capital of France?"]
    return yaml.safe_dump_all([slm, SOURCE, llm])


def test_a_routes_file_holds_data_sources_beside_model_routes() -> None:
    text = _mixed_file()
    routes = load_routes(text)
    assert [r.name for r in routes] == ["local-slm", "local-llm"]
    assert routes[0].spec.description == "Short everyday questions"
    assert routes[0].spec.examples == ["What is the capital of France?"]
    [source] = load_sources(text)
    assert source.endpoint == "127.0.0.1:7000" and source.tenant == "default"
    assert source.spec.kind == "hybrid" and source.spec.search.top_k == 3


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"description": ""}, "description"),
        ({"description": "x" * 501}, "description"),
        ({"examples": ["q"] * 21}, "examples"),
        ({"excludes": [""]}, "excludes"),
        ({"kind": "semantic"}, "kind"),
        ({"search": {"topK": 21}}, "topK"),
    ],
)
def test_bad_data_sources_are_rejected_naming_the_field(
    patch: dict[str, object], field: str
) -> None:
    obj = {**SOURCE, "spec": {**SOURCE["spec"], **patch}}  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=field):
        DataSource.model_validate(obj)


def test_the_file_watcher_installs_sources_and_hot_swaps_them(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(_mixed_file())
    table = RoutingTable(BackendPool())
    watcher = RoutesFileWatcher(str(path), table)
    assert watcher.load()
    snapshot = table.snapshot
    assert snapshot.find("local-slm") is not None
    source = snapshot.source("runbooks")
    assert source is not None and source.top_k == 3 and source.excludes == ("Write me a poem",)
    # A broken file keeps the last good table, sources included.
    path.write_text(_mixed_file().replace("topK: 3", "topK: 99"))
    assert not watcher.load()
    assert table.snapshot.source("runbooks") is not None
    # Removing the DataSource document removes the source from the table.
    slm, llm = local_default_routes("127.0.0.1:1", "small", "127.0.0.1:2", "large")
    path.write_text(yaml.safe_dump_all([slm, llm]) + "\n")
    assert watcher.load()
    assert table.snapshot.source("runbooks") is None
