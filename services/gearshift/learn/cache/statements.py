"""The statement/instruction dev set: documentation-style sentences and requests.

`statement_pairs.json` (written for this project, Apache-2.0 like the rest of it) holds
groups of an origin sentence, paraphrases of it, and near-duplicates with a real
difference (negation, changed number, changed entity, opposite word, swapped roles,
or a related but different request). It is used the way a cache sees text: every
origin of a split is stored, and each paraphrase and each near-duplicate is looked
up among all of them. A paraphrase must be served its own origin; a near-duplicate
must be a miss. Groups are split by a hash of the origin into "calib" (the cosine
operating points) and "heldout" (only for `benchmarks/eval_cache_precision.py`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.cache.decision import Candidate, Decision, HitDecider
from gearshift.embeddings.disk_cache import cached_embeddings

DEV_FILE = Path(__file__).with_name("statement_pairs.json")
EMBEDDING_CACHE_DIR = Path.home() / ".cache" / "gearshift" / "statements"

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Lookup:
    """A text looked up; `expected` is the index of its origin, or None if it must miss."""

    text: str
    expected: int | None
    kind: str


@dataclass(frozen=True)
class StatementSet:
    origins: list[str]
    lookups: list[Lookup]


def _split_of(origin: str) -> str:
    digest = hashlib.sha256(origin.encode("utf-8")).digest()
    return "heldout" if digest[0] % 2 else "calib"


def load_statements(split: str, path: Path = DEV_FILE) -> StatementSet:
    """The origins and lookups of one split ("calib", "heldout" or "all")."""
    groups = json.loads(path.read_text(encoding="utf-8"))
    origins: list[str] = []
    lookups: list[Lookup] = []
    for group in groups:
        if split != "all" and _split_of(group["origin"]) != split:
            continue
        index = len(origins)
        origins.append(group["origin"])
        lookups += [Lookup(p, index, "paraphrase") for p in group["paraphrases"]]
        lookups += [Lookup(n["text"], None, n["kind"]) for n in group["negatives"]]
    return StatementSet(origins, lookups)


def embed(texts: Sequence[str]) -> dict[str, FloatArray]:
    unique = sorted(set(texts))
    vectors = cached_embeddings(unique, EMBEDDING_CACHE_DIR, batch_size=64)
    return dict(zip(unique, vectors, strict=True))


def run_lookups(
    data: StatementSet, decider: HitDecider, candidates: int = 4
) -> list[tuple[Lookup, Decision, list[int]]]:
    """Each lookup decided among the `candidates` nearest stored origins, as the cache does.

    Returns the lookup, the decision and the origin index of each candidate (so a
    decision's `served`/`judged` can be mapped back to an origin).
    """
    vectors = embed(data.origins + [lk.text for lk in data.lookups])
    stored = np.stack([vectors[o] for o in data.origins])
    out = []
    for lookup in data.lookups:
        v = vectors[lookup.text]
        sims = stored @ v
        nearest = [int(i) for i in np.argsort(-sims)[:candidates]]
        found = [Candidate(data.origins[i], stored[i], float(sims[i])) for i in nearest]
        out.append((lookup, decider.decide(lookup.text, v, found), nearest))
    return out
