#!/usr/bin/env bash
# Installs everything, prepares the embedded model once (cached), then runs the checks
# and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/gearshift models prepare
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/mypy benchmarks
.venv/bin/lint-imports
# Two workers (pytest-xdist); tests/conftest.py keeps every test of a vLLM engine on one of
# them, so each engine starts once. GEARSHIFT_TEST_WORKERS=0 runs the suite in one process.
WORKERS="${GEARSHIFT_TEST_WORKERS:-2}"
PARALLEL=()
[ "$WORKERS" = "0" ] || PARALLEL=(-n "$WORKERS" --dist loadgroup)
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 "${PARALLEL[@]}" "$@"
