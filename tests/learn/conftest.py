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

from gearshift.dev.data import shared_data_dir
from gearshift.learn.embed_cache import embed_texts

DEV_DATA = shared_data_dir() / "routing_dev.jsonl"


@pytest.fixture(scope="session")
def embed() -> Callable[[Sequence[str]], npt.NDArray[np.float32]]:
    return embed_texts


@pytest.fixture(scope="session")
def dev_data_path() -> Path:
    if not DEV_DATA.exists():
        pytest.skip(f"{DEV_DATA} is not available on this machine")
    return DEV_DATA
