"""`gearshift up` plans a retriever and declares gearshift-docs beside the model routes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gearshift.cli.local_sources import DOCS_SOURCE, docs_folder
from gearshift.cli.up import Ports, plan
from gearshift.routes import load_routes_file


def test_up_starts_a_retriever_and_writes_the_docs_datasource(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEARSHIFT_HOME", str(tmp_path))
    ports = Ports(router=55101, retriever=55105)
    specs = plan(tmp_path, ports, ["retriever", "router"])
    by_name = {spec.name: spec for spec in specs}
    argv = by_name["retriever"].argv
    assert argv[argv.index("serve") + 1] == "retriever"
    assert argv[argv.index("--grpc-port") + 1] == "55105"
    assert argv[argv.index("--data-dir") + 1] == str(tmp_path / "retriever")
    assert [s.name for s in specs].index("retriever") < [s.name for s in specs].index("router")

    documents = list(yaml.safe_load_all((tmp_path / "routes.yaml").read_text()))
    (source,) = [d for d in documents if d["kind"] == "DataSource"]
    assert source["metadata"]["name"] == DOCS_SOURCE
    assert source["spec"]["retriever"]["endpoint"] == "127.0.0.1:55105"
    assert source["spec"]["description"].startswith("Gearshift's own documentation")
    assert 1 <= len(source["spec"]["description"]) <= 500
    # The model routes in the same file still load.
    assert load_routes_file(tmp_path / "routes.yaml")
    folder = docs_folder()
    assert folder is not None and (folder / "cache.md").is_file()
