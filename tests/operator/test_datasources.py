"""DataSource: the CRD's schema, and the operator reporting a real retriever's counts."""

from __future__ import annotations

import asyncio
import copy
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from gearshift.v1 import retriever_pb2_grpc
from tests.operator.apiserver import ApiServer
from tests.operator.crd_check import validate
from tests.operator.test_operator import _eventually, _free_port, _get, _runner, _send, _stop
from tests.retriever.helpers import CACHE_DOC, GPU_DOC, POWER_DOC, ingest

ROOT = Path(__file__).parents[2]
CRD = yaml.safe_load((ROOT / "helm/gearshift/files/crds/datasource.yaml").read_text())
EXAMPLES = sorted((ROOT / "examples/datasources").glob("*.yaml"))
NS = "default"
SOURCES = f"/apis/gearshift.dev/v1alpha1/namespaces/{NS}/datasources"

pytestmark = pytest.mark.timeout(300)


def _example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples/datasources/runbooks.yaml").read_text())
    return data


def test_crd_shape_and_columns() -> None:
    names = CRD["spec"]["names"]
    assert (CRD["spec"]["group"], names["plural"], names["shortNames"]) == (
        "gearshift.dev",
        "datasources",
        ["ds"],
    )
    version = CRD["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Kind", "Documents", "Chunks", "Ready", "Age"]


def test_every_field_explains_itself() -> None:
    """`kubectl explain datasource.spec...` prints these descriptions."""
    from tests.operator.test_crd import _walk

    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "description" in schema
    assert _walk(schema) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(path: Path) -> None:
    assert validate(yaml.safe_load(path.read_text()), CRD) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.pop("description"), "description"),
        (lambda s: s.update(description="   "), "does not match"),
        (lambda s: s.update(description="x" * 501), "too long"),
        (lambda s: s.update(kind="fuzzy"), "fuzzy"),
        (lambda s: s.update(search={"topK": 0}), "minimum"),
        (lambda s: s.update(search={"topK": 21}), "maximum"),
        (lambda s: s.update(examples=[f"q{i}" for i in range(21)]), "too long"),
        (lambda s: s.update(excludes=list(s["examples"][:1])), "both in examples and in excludes"),
        (lambda s: s.update(retriever={"endpoint": "no port"}), "does not match"),
    ],
)
def test_bad_specs_are_rejected(change: Any, expected: str) -> None:
    obj = copy.deepcopy(_example())
    change(obj["spec"])
    errors = validate(obj, CRD)
    assert errors and any(expected in e for e in errors), errors


def test_defaults_fill_kind_and_top_k() -> None:
    from tests.operator.crd_check import apply_defaults, schema_of

    obj = {"spec": {"description": "Notes"}}
    filled = apply_defaults(obj, schema_of(CRD))
    assert filled["spec"]["kind"] == "hybrid"
    assert filled["spec"]["search"]["topK"] == 5
    assert filled["spec"]["retriever"]["endpoint"] == ""


def _source(name: str, endpoint: str, tenant: str) -> dict[str, Any]:
    obj = _example()
    obj["metadata"] = {"name": name, "namespace": NS}
    obj["spec"]["retriever"] = {"endpoint": endpoint, "tenant": tenant}
    return obj


def _ready(obj: dict[str, Any] | None) -> tuple[str, str]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return cond["status"], cond["reason"]
    return "", ""


async def test_operator_reports_counts_and_readiness_from_a_real_retriever(
    apiserver: ApiServer, kubeconfig: Path, retriever_endpoint: str
) -> None:
    tenant = "ops-" + uuid.uuid4().hex[:8]
    async with grpc.aio.insecure_channel(retriever_endpoint) as channel:
        stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
        first = await ingest(stub, tenant, "runbooks", {"cache.md": CACHE_DOC, "gpu.md": GPU_DOC})
        dead = f"127.0.0.1:{_free_port()}"
        await _send(apiserver, "POST", SOURCES, _source("runbooks", retriever_endpoint, tenant))
        await _send(apiserver, "POST", SOURCES, _source("missing", retriever_endpoint, tenant))
        await _send(apiserver, "POST", SOURCES, _source("offline", dead, tenant))
        runner = _runner()
        await asyncio.to_thread(runner.__enter__)
        try:

            async def ready_runbooks() -> Any:
                obj = await _get(apiserver, f"{SOURCES}/runbooks")
                return obj if _ready(obj) == ("True", "Ready") else None

            obj = await _eventually(ready_runbooks, "runbooks Ready")
            status = obj["status"]
            assert status["endpoint"] == retriever_endpoint
            assert status["documents"] == 2
            assert status["chunks"] == sum(r.chunks for r in first.results)
            assert status["contentVersion"] == first.content_version
            assert status["lastIngestedAt"].endswith("Z")

            async def reason(name: str, wanted: str) -> Any:
                obj = await _get(apiserver, f"{SOURCES}/{name}")
                return obj if _ready(obj) == ("False", wanted) else None

            missing = await _eventually(lambda: reason("missing", "NotFound"), "NotFound")
            assert "gearshift sources ingest" in missing["status"]["conditions"][0]["message"]
            offline = await _eventually(lambda: reason("offline", "Unreachable"), "Unreachable")
            assert dead in offline["status"]["conditions"][0]["message"]

            # A later ingestion shows up through the periodic re-check.
            await ingest(stub, tenant, "runbooks", {"power.md": POWER_DOC})

            async def three_documents() -> Any:
                obj = await _get(apiserver, f"{SOURCES}/runbooks")
                return obj if (obj or {}).get("status", {}).get("documents") == 3 else None

            await _eventually(three_documents, "documents = 3", timeout=60)
        finally:
            await _stop(runner)
