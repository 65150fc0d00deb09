"""Test-wide configuration.

Shared fixtures live in `tests/fixtures/` and are registered here; each starts its
expensive part (vLLM engine, vLLM server, PostgreSQL) once per test session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.slm",
    "tests.fixtures.otlp",
    "tests.fixtures.vllm_upstream",
    "tests.fixtures.proxy",
    "tests.fixtures.postgres",
    "tests.fixtures.cache",
    "tests.fixtures.retriever",
]

# Fixtures that start a vLLM engine (in this process or as a server). With parallel workers
# (`pytest -n 2 --dist loadgroup`, as scripts/test.sh runs the suite) every test that uses one
# runs on the same worker, so each engine still starts once per run; the mesh tests, which
# start their own processes, get a group of their own; the rest spread over both workers.
VLLM_FIXTURES = frozenset({"slm_server", "vllm_upstream"})
OWN_PROCESSES = Path(__file__).parent / "e2e"


def pytest_itemcollected(item: pytest.Item) -> None:
    """Groups are set as items are collected, before any collection_modifyitems hook (xdist
    reads them in its own)."""
    if VLLM_FIXTURES & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.xdist_group("vllm"))
    elif OWN_PROCESSES in item.path.parents:
        item.add_marker(pytest.mark.xdist_group("mesh"))
