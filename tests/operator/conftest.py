"""Fixtures for operator tests: a kmock Kubernetes emulator and a kubeconfig pointing at it.

Env vars are set before the handlers module is imported (its settings are read at import,
because kopf's timer interval is fixed at decoration time).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

os.environ.setdefault("GEARSHIFT_OPERATOR_OPERATOR_METRICS_PORT", "-1")
os.environ.setdefault("GEARSHIFT_OPERATOR_AUTOSCALE_INTERVAL_S", "1")
os.environ.setdefault("GEARSHIFT_OPERATOR_LIVENESS_ENDPOINT", "")
os.environ.setdefault("GEARSHIFT_OPERATOR_DATASOURCE_INTERVAL_S", "1")

from kmock import Server

from tests.operator.apiserver import ApiServer


@pytest_asyncio.fixture()
async def apiserver() -> AsyncIterator[ApiServer]:
    """A fresh emulated API server (kmock) with the resources the operator uses."""
    async with ApiServer() as handler, Server(handler):
        handler.declare_resources()
        yield handler


@pytest.fixture()
def kubeconfig(apiserver: ApiServer, tmp_path: Path) -> Iterator[Path]:
    """KUBECONFIG for both kopf's login and the operator's own client."""
    path = tmp_path / "kubeconfig"
    server = str(apiserver.url).rstrip("/")
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "kmock", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                "current-context": "kmock",
            }
        )
    )
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(path)
    yield path
    if old is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = old
