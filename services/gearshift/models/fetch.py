"""Downloads a Hugging Face model into the cache before the engine starts (init container).

The operator runs this as the `fetch-weights` init container of every `hf://` route, so the
engine itself starts with `HF_HUB_OFFLINE=1` and never downloads. With a shared cache
volume (`spec.model.cacheClaim`) the first pod downloads and the others find the snapshot
complete: one download per volume. The download is bounded: the files vLLM would load
are summed first (a dry run, no bytes fetched), and a model larger than the cache's size
limit fails here with a message naming both sizes, instead of filling the volume and
getting the pod evicted half-way.

Only what vLLM loads is fetched: safetensors when the repo has them (else the PyTorch
.bin/.pt files), configs and tokenizer files; never Meta's `original/` consolidated
checkpoints, GGUF, Flax, TensorFlow or ONNX copies, which can double a repo's size.

    python -m gearshift.models.fetch org/name [--revision REV] [--max-size 64Gi]
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger("gearshift.fetch")

NEVER = ("original/*", "*.gguf", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.tflite")
TORCH_WEIGHTS = ("*.bin", "*.pt", "*.pth")


class TooLarge(RuntimeError):
    """The model does not fit the cache's size limit."""


def wanted_files(names: Iterable[str]) -> list[str]:
    """The repo files vLLM would load (sorted)."""
    names = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in NEVER)]
    if any(n.endswith(".safetensors") for n in names):
        names = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in TORCH_WEIGHTS)]
    return sorted(names)


def check_fits(sizes: dict[str, int | None], max_bytes: int | None, repo: str) -> int:
    """Total bytes of the files; TooLarge when above `max_bytes` (None: no limit)."""
    total = sum(size or 0 for size in sizes.values())
    if max_bytes is not None and total > max_bytes:
        raise TooLarge(
            f"{repo} needs {total / 2**30:.1f} GiB of weights but the model cache is limited "
            f"to {max_bytes / 2**30:.1f} GiB; raise spec.model.cacheSize (or use a larger "
            "cacheClaim), or load the weights from pvc:// or image:// instead"
        )
    return total


def parse_size(text: str) -> int:
    """A Kubernetes quantity ("64Gi", "500G") in bytes."""
    from kubernetes.utils.quantity import parse_quantity

    return int(parse_quantity(text))  # type: ignore[no-untyped-call]


def fetch(repo: str, revision: str | None, max_bytes: int | None) -> str:
    """Downloads what vLLM loads from `repo` into $HF_HOME; returns the snapshot folder."""
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        # Offline (an air-gapped cluster with a pre-filled cache volume): it must be there.
        path = snapshot_download(repo, revision=revision, local_files_only=True)
        log.info("%s found in the cache at %s (offline)", repo, path)
        return str(path)
    plan: Any = snapshot_download(repo, revision=revision, dry_run=True)
    infos = {info.filename: info for info in plan}
    files = wanted_files(infos)
    total = check_fits({f: infos[f].file_size for f in files}, max_bytes, repo)
    missing = [f for f in files if infos[f].will_download]
    log.info(
        "%s: %d files, %.2f GiB; %d to download", repo, len(files), total / 2**30, len(missing)
    )
    path = snapshot_download(repo, revision=revision, allow_patterns=files)
    return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gearshift.models.fetch")
    parser.add_argument("repo", help="Hugging Face model id, org/name")
    parser.add_argument("--revision", default=None, help="Branch, tag or commit.")
    parser.add_argument("--max-size", default="", help="Largest model accepted (e.g. 64Gi).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        max_bytes = parse_size(args.max_size) if args.max_size else None
        fetch(args.repo, args.revision, max_bytes)
    except TooLarge as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:  # gated model without token, unknown repo, network down
        log.error("could not fetch %s: %s", args.repo, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
