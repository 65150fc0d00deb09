"""What the backends store and return, and the hashes that make re-ingest cheap.

A document's content hash covers everything its chunks derive from (text, title,
media type, metadata and the chunk size), so an unchanged re-ingest is detected
before any embedding is computed. A source's content version is the XOR of one
digest per (document id, content hash): it is updated in O(1) per changed document,
inside the same transaction, and it is the same for the same set of documents
whichever backend holds them or in whatever order they arrived.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

EMPTY_VERSION = "0" * 64
VERSION_CHARS = 16


def content_hash(
    text: str, title: str, media_type: str, metadata: dict[str, str], max_chunk_chars: int
) -> str:
    """Digest of everything a document's chunks are derived from."""
    payload = json.dumps(
        [text, title, media_type, sorted(metadata.items()), max_chunk_chars],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _member_digest(document_id: str, digest: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{document_id}\0{digest}".encode()).digest(), "big")


def toggle_version(version: str, document_id: str, digest: str) -> str:
    """Adds (or, applied twice, removes) one document to a source's version."""
    value = int(version, 16) ^ _member_digest(document_id, digest)
    return f"{value:064x}"


def public_version(version: str) -> str:
    """The short form callers see (64 bits are plenty to tell versions apart)."""
    return version[:VERSION_CHARS]


@dataclass(frozen=True)
class StoredDocument:
    """A document as the backends keep it (its chunks are stored beside it)."""

    tenant: str
    source: str
    document_id: str
    title: str
    media_type: str
    metadata: dict[str, str]
    content_hash: str


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk with its embedding, ready to store."""

    index: int
    title: str
    text: str
    vector: npt.NDArray[np.float32]


@dataclass
class Hit:
    """One chunk found by a ranking, with what a passage needs."""

    chunk_id: int
    document_id: str
    document_title: str
    chunk_title: str
    chunk_index: int
    text: str
    metadata: dict[str, str]
    score: float
    vector_similarity: float = 0.0

    @classmethod
    def from_row(cls, row: tuple[Any, ...], score: float, similarity: float = 0.0) -> Hit:
        """A hit from the seven chunk columns both backends select, in the same order."""
        return cls(
            chunk_id=int(row[0]),
            document_id=row[1],
            document_title=row[2],
            chunk_title=row[3],
            chunk_index=int(row[4]),
            text=row[5],
            metadata=metadata_from_json(row[6]),
            score=score,
            vector_similarity=similarity,
        )


@dataclass(frozen=True)
class SourceInfo:
    """Counts and version of one source."""

    source: str
    documents: int
    chunks: int
    content_version: str
    last_ingested_at: float


@dataclass(frozen=True)
class WriteOutcome:
    """What a replace or delete did."""

    documents: int = 0
    chunks: int = 0
    content_version: str = ""


def metadata_json(metadata: dict[str, str]) -> str:
    return json.dumps(dict(sorted(metadata.items())), ensure_ascii=False)


def metadata_from_json(text: str) -> dict[str, str]:
    data = json.loads(text) if text else {}
    return {str(k): str(v) for k, v in data.items()}
