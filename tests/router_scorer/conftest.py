"""Fixtures for the difficulty scorer tests: the real all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gearshift.dev.data import shared_data_dir
from gearshift.router.scorer.embedding import embed_texts, load_encoder

DEV_DATA = shared_data_dir() / "routing_dev.jsonl"


@pytest.fixture(scope="session")
def encoder() -> Any:
    return load_encoder()


@pytest.fixture(scope="session")
def embed(encoder: Any) -> Callable[[Sequence[str]], npt.NDArray[np.float32]]:
    def run(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return embed_texts(texts, encoder=encoder)

    return run


@pytest.fixture(scope="session")
def dev_data_path() -> Path:
    if not DEV_DATA.exists():
        pytest.skip(f"{DEV_DATA} is not available on this machine")
    return DEV_DATA
