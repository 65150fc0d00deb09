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
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
