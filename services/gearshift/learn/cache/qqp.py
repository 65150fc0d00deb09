"""Quora Question Pairs (the dev file) for training and judging the verifier.

Kept in the package (not in benchmarks/) because the training script and the
precision report must split the data the same way: by connected component of the
question graph, so no question text of the held-out part was ever seen in training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.dev.data import shared_data_dir
from gearshift.embeddings.disk_cache import cached_embeddings

DEFAULT_DEV_FILE = shared_data_dir() / "qqp_pairs_dev.jsonl"
EMBEDDING_CACHE_DIR = Path.home() / ".cache" / "gearshift" / "qqp"

# Share of question-graph components held out from training (for the precision report).
HELDOUT_SHARE = 0.25
# Share of the remaining components used to calibrate thresholds (not fitted on).
CALIBRATION_SHARE = 0.25


@dataclass
class Pairs:
    """Question pairs with labels and their split ("train" | "calib" | "heldout")."""

    a: list[str]
    b: list[str]
    label: npt.NDArray[np.bool_]
    split: npt.NDArray[np.str_]

    def subset(self, split: str) -> Pairs:
        idx = np.flatnonzero(self.split == split)
        return Pairs(
            [self.a[i] for i in idx], [self.b[i] for i in idx], self.label[idx], self.split[idx]
        )

    def __len__(self) -> int:
        return len(self.a)


def _bucket(key: str) -> float:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def load_pairs(path: Path = DEFAULT_DEV_FILE) -> Pairs:
    """Loads the pairs and assigns each to a split by its question-graph component."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for row in rows:
        ra, rb = find(row["a"]), find(row["b"])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    # Name each component by its smallest question so the split does not depend on order.
    name: dict[str, str] = {}
    for q in parent:
        root = find(q)
        name[root] = min(name.get(root, q), q)
    splits = []
    for row in rows:
        u = _bucket(name[find(row["a"])])
        if u < HELDOUT_SHARE:
            splits.append("heldout")
        elif u < HELDOUT_SHARE + (1 - HELDOUT_SHARE) * CALIBRATION_SHARE:
            splits.append("calib")
        else:
            splits.append("train")
    return Pairs(
        [r["a"] for r in rows],
        [r["b"] for r in rows],
        np.array([bool(r["duplicate"]) for r in rows]),
        np.array(splits),
    )


def embed_questions(
    texts: list[str], cache_dir: Path = EMBEDDING_CACHE_DIR
) -> dict[str, npt.NDArray[np.float32]]:
    """Embeds unique questions once and caches them on disk (the dev file is fixed)."""
    unique = sorted(set(texts))
    vectors = cached_embeddings(unique, cache_dir, batch_size=128)
    return dict(zip(unique, vectors, strict=True))
