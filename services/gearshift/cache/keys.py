"""Normalised text and entry keys for the exact-match path.

Two questions that differ only in case, spacing, Unicode form or trailing
punctuation are the same question; they hit without a vector search and without
the verifier. Anything more (synonyms, word order) is the semantic path's job.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from gearshift.v1 import cache_pb2

_SPACE = re.compile(r"\s+")
_TRAILING = re.compile("[\\s?.!\u3002\uff1f\uff01]+$")


def normalise(text: str) -> str:
    """Canonical form of a question: NFKC, case-folded, single spaces, no end punctuation."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _SPACE.sub(" ", text).strip()
    return _TRAILING.sub("", text)


def scope_key(scope: cache_pb2.CacheScope) -> str:
    """One string naming tenant + scope + context digest (a hard filter, hashed)."""
    raw = "\x1f".join((scope.tenant, scope.scope, scope.context_digest))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def exact_key(scope: cache_pb2.CacheScope, text: str) -> str:
    """Key of the exact-match path: the scope and the normalised question."""
    raw = "\x1f".join((scope_key(scope), normalise(text)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]
