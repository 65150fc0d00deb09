"""Cuts Markdown and plain text into bounded chunks that keep their headings.

A chunk never crosses a Markdown heading, so every chunk has one title: the path of
headings it sits under ("Cache > Settings"). The heading path is what a reader (and
the keyword ranking) needs to tell two "Settings" sections apart, so it is indexed
and embedded with the chunk's text. Long sections are split at paragraph, then
sentence, then word boundaries so no chunk exceeds `max_chars`; headings inside
fenced code blocks are code, not structure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKDOWN = "text/markdown"
PLAIN = "text/plain"
MEDIA_TYPES = (MARKDOWN, PLAIN)

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, as indexed."""

    index: int
    title: str
    text: str

    @property
    def indexed_text(self) -> str:
        """What is embedded: the heading path gives the text its context."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def guess_media_type(document_id: str) -> str:
    """Markdown for .md/.markdown names, plain text for everything else."""
    lowered = document_id.lower()
    return MARKDOWN if lowered.endswith((".md", ".markdown")) else PLAIN


def markdown_title(text: str) -> str:
    """The first level-1 heading (or the first heading of any level), else ''."""
    first = ""
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if match:
            if len(match.group(1)) == 1:
                return match.group(2).strip()
            first = first or match.group(2).strip()
    return first


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading path, body) per Markdown section, in order; the preamble has path ''."""
    out: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            out.append((" > ".join(title for _, title in path), content))
        body.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            body.append(line)
            continue
        flush()
        level = len(match.group(1))
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, match.group(2).strip()))
    flush()
    return out


def _pieces(text: str, max_chars: int) -> list[str]:
    """Splits text into pieces of at most max_chars at the coarsest boundary that fits."""
    if len(text) <= max_chars:
        return [text]
    for separator in (re.compile(r"\n\s*\n"), _SENTENCE_END, re.compile(r"\s+")):
        parts = [p.strip() for p in separator.split(text) if p.strip()]
        if len(parts) > 1:
            out: list[str] = []
            for part in parts:
                out.extend(_pieces(part, max_chars))
            return out
    # One unbroken run of characters: cut it hard.
    return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Greedily joins consecutive pieces while they fit, so chunks are not tiny."""
    out: list[str] = []
    current = ""
    for piece in pieces:
        joined = f"{current}\n\n{piece}" if current else piece
        if len(joined) <= max_chars:
            current = joined
        else:
            if current:
                out.append(current)
            current = piece
    if current:
        out.append(current)
    return out


def chunk_document(text: str, media_type: str, title: str, max_chars: int) -> list[Chunk]:
    """The chunks of one document; Markdown by sections, plain text by paragraphs."""
    if media_type == MARKDOWN:
        sections = _sections(text)
    else:
        sections = [(title, text.strip())] if text.strip() else []
    chunks: list[Chunk] = []
    for heading_path, body in sections:
        for piece in _pack(_pieces(body, max_chars), max_chars):
            chunks.append(Chunk(len(chunks), heading_path or title, piece))
    return chunks
