"""Fixtures for the difficulty scorer tests: the router's real all-MiniLM-L6-v2 embedder.

The run-time scorer tests (tests/router/scorer/) use the same fixtures; their conftest
imports them from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from gearshift.learn.embed_cache import embed_texts
from tests.shared_data import shared_data


@pytest.fixture(scope="session")
def embed() -> Callable[[Sequence[str]], npt.NDArray[np.float32]]:
    return embed_texts


@pytest.fixture(scope="session")
def dev_data_path() -> Path:
    return shared_data("routing_dev.jsonl")
