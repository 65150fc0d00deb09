"""Downloads a Hugging Face model into the cache before the engine starts (init container).

The operator runs this as the `fetch-weights` init container of every `hf://` route, so the
engine itself starts with `HF_HUB_OFFLINE=1` and never downloads. With a shared cache
volume (`spec.model.cacheClaim`) the first pod downloads and the others find the snapshot
complete: one download per volume. The download is bounded: the files vLLM would load
are summed first (a dry run, no bytes fetched), and a model larger than the cache's size
limit fails here with a message naming both sizes, instead of filling the volume and
getting the pod evicted half-way.

Each completed download leaves a marker per (repo, revision) in the cache
(`$HF_HOME/gearshift-fetched/`), holding the snapshot folder: a pod (or the staging Job)
that finds the marker and the snapshot starts at once, without asking the Hub anything,
so one revision is downloaded once per cache claim and a pod with warm weights skips it.

Only what vLLM loads is fetched: safetensors when the repo has them (else the PyTorch
.bin/.pt files), configs and tokenizer files; never Meta's `original/` consolidated
checkpoints, GGUF, Flax, TensorFlow or ONNX copies, which can double a repo's size.

    python -m gearshift.models.fetch org/name [--revision REV] [--max-size 64Gi]
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import sys
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
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


MARKER_DIR = "gearshift-fetched"


def marker_path(hf_home: str, repo: str, revision: str | None) -> Path:
    """Where the marker of one (repo, revision) lives in the cache (revision None: main)."""
    name = urllib.parse.quote(f"{repo}@{revision or 'main'}", safe="@")
    return Path(hf_home) / MARKER_DIR / name


def warm_snapshot(hf_home: str, repo: str, revision: str | None) -> str | None:
    """The snapshot folder a completed fetch recorded, if it is still in the cache."""
    marker = marker_path(hf_home, repo, revision)
    try:
        folder = marker.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return folder if folder and Path(folder).is_dir() else None


def write_marker(hf_home: str, repo: str, revision: str | None, folder: str) -> None:
    """Records a completed fetch (atomically: a half-written marker is never read)."""
    marker = marker_path(hf_home, repo, revision)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}")
    tmp.write_text(folder + "\n", encoding="utf-8")
    tmp.replace(marker)


def fetch(repo: str, revision: str | None, max_bytes: int | None) -> str:
    """Downloads what vLLM loads from `repo` into $HF_HOME; returns the snapshot folder."""
    from huggingface_hub import constants, snapshot_download

    warm = warm_snapshot(constants.HF_HOME, repo, revision)
    if warm is not None:
        log.info("%s@%s is warm in the cache at %s; nothing to fetch", repo, revision, warm)
        return warm
    if constants.HF_HUB_OFFLINE:
        # Offline (an air-gapped cluster with a pre-filled cache volume): it must be there.
        path = snapshot_download(repo, revision=revision, local_files_only=True)
        log.info("%s found in the cache at %s (offline)", repo, path)
        write_marker(constants.HF_HOME, repo, revision, str(path))
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
    write_marker(constants.HF_HOME, repo, revision, str(path))
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
