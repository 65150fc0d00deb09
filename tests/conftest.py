"""Test-wide configuration.

Shared fixtures live in `tests/fixtures/` and are registered here; each starts its
expensive part (vLLM engine, vLLM server, PostgreSQL) once per test session.
"""

from __future__ import annotations

import os

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
