"""The project's evaluation data, for the tests that read it.

The development splits live in `shared/data/` beside the repository (or
$GEARSHIFT_DATA_DIR), not in the repository: they are derived from public benchmarks
(RouteLLM's MMLU/GSM8K outcomes, GPTCache's Quora pairs, AlpacaEval and Vicuna-bench
judgements; see that folder's README) and are kept beside the project by its maintainers.
A clone from the public repository does not have them, so the tests that read them skip
there, saying where the data comes from. CI runs with the data beside the clone and
`CI=true`, where a missing file is a failure, not a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gearshift.dev.data import shared_data_dir


def shared_data(relative: str) -> Path:
    """The path of one data file; skips the test (fails it under CI=true) when it is absent."""
    path = shared_data_dir() / relative
    if path.exists():
        return path
    message = (
        f"needs the evaluation data file {relative}, which is not in the repository: put the "
        f"project's shared/data folder beside the clone or set GEARSHIFT_DATA_DIR "
        f"(looked in {path.parent})"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the test {message}", pytrace=False)
    pytest.skip(message)
