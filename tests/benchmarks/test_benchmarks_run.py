"""The benchmark scripts still run: each one, tiny, prints its table.

Benchmarks are not timed here (timing goals belong in the scripts' own reports); this
only keeps them from rotting between the runs that fill the README's tables. The SLM
benchmark is left out: it starts its own vLLM engine, which the SLM tests already cover.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared_data import shared_data

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
FRONTDOOR_SKIPS = ["--no-workers", "--no-grpc-export"]
# The benchmarks that read the project's evaluation data (see tests/shared_data.py).
NEEDS_DATA = {
    "bench_cache.py": "qqp_pairs_dev.jsonl",
    "eval_feedback_loop.py": "openended/alpacaeval1_gpt4_vs_llama2_7b_chat.jsonl",
}


@pytest.mark.parametrize(
    ("script", "args", "row"),
    [
        (
            "bench_cache.py",
            ["--sizes", "300", "--backends", "usearch", "--queries", "20"],
            "| usearch | 300 | 32 |",
        ),
        ("bench_proxy.py", ["--requests", "20", "--concurrency", "1"], "| 1 | 20 |"),
        ("bench_router.py", ["--requests", "20", "--concurrency", "2"], "| router, cache hits |"),
        (
            "bench_frontdoor.py",
            ["--rounds", "1", "--requests", "20", "--concurrency", "1,2", *FRONTDOOR_SKIPS],
            "| tracing 10% | router |",
        ),
        (
            "bench_retriever.py",
            ["--chunks", "300", "--backends", "usearch", "--queries", "20", "--skip-recall"],
            "| usearch+sqlite | 300 | hybrid |",
        ),
        (
            "bench_selection.py",
            ["--options", "10", "--calls", "50", "--baseline-calls", "1"],
            "| 10 | 60 |",
        ),
        ("bench_multi.py", ["--requests", "3"], "| 3 branches, synthesize |"),
        (
            "eval_feedback_loop.py",
            ["--seeds", "1", "--outcomes-only"],
            "| 0 | ",
        ),
    ],
)
def test_benchmark_prints_its_table(script: str, args: list[str], row: str) -> None:
    if script in NEEDS_DATA:
        shared_data(NEEDS_DATA[script])
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert row in done.stdout, done.stdout
    assert "Machine" in done.stdout or "machine" in done.stdout
