"""Answers from passages without a model, and how well passages support a model's answer.

A small model handed retrieved passages often writes something the passages do not say (the
135M embedded default answered "how do I set the cache's maximum false-hit rate" with a C
`#define`). Two tools keep a source answer truthful, both lexical and fast (well under a
millisecond; no model, no embedding):

- `quote_answer`: the lines of the best passage that match the question, with its citation
  number: what the docs say, never more. `source_answer: quote` answers with it alone.
- `support`: the share of an answer's content words (stemmed; identifiers whole and by their
  parts; numbers as written) that occur in the passages. `source_answer: verify` serves a
  model's answer only when its support reaches `source_support_min`, else the quote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gearshift.v1 import retriever_pb2

WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*[A-Za-z0-9]|[A-Za-z]|\d+(?:\.\d+)?")
STOP = frozenset(
    "a an and are as at be by can do does for from how i in is it its of on or the to what "
    "when where which who why will with my me you your this that there these those any "
    "should would could into about after before than then them they we our us if not no "
    "so also has have had was were been being more most such only each all some".split()
)
SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ed", "es", "s")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*(\[])")
# Markdown lines that stand alone: table rows, list items, headings, code fences.
ITEM = re.compile(r"\s*(\||[-*+] |\d+\. |#|```)")
CITATION = re.compile(r"\[\d+\]")
QUOTE_CHARS = 500


def _stem(word: str) -> str:
    """A crude suffix stripper: "settings", "setting" and "set" meet at "set"."""
    word = word.lower()
    for suffix in SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            stem = word[: -len(suffix)]
            if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "ls":
                stem = stem[:-1]  # "sett" -> "set", but "fall", "pass" stay
            return stem
    return word


def terms(text: str) -> set[str]:
    """Stemmed content words; an identifier counts whole and by its parts."""
    out: set[str] = set()
    for word in WORD.findall(CITATION.sub(" ", text)):
        for part in {word, *re.split(r"[_\-]", word)}:
            if part and part.lower() not in STOP and (len(part) > 1 or part.isdigit()):
                out.add(_stem(part))
    return out


def units(text: str) -> list[str]:
    """A passage as quotable units: sentences of prose (wrapped lines joined), and list
    items and table rows whole."""
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.extend(s.strip() for s in SENTENCE_END.split(" ".join(paragraph)))
            paragraph.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            flush()
        elif ITEM.match(raw):
            flush()
            if not re.fullmatch(r"[|\-: ]+", line) and not line.startswith("```"):
                paragraph.append(line)
        else:
            paragraph.append(line)
    flush()
    return [u for u in out if u]


def quote_answer(question: str, passages: Sequence[retriever_pb2.Passage]) -> str:
    """The best passage's lines around the one that matches the question most, cited [1].

    Only the first (best-ranked) passage is quoted: later ones rarely beat it and a quote
    is worth reading only when it is short. When no line shares a word with the question,
    the answer says so instead of pretending.
    """
    if not passages:
        return "The data source returned no passages for this question."
    best = passages[0]
    where = best.chunk_title  # a Markdown chunk's title is its heading path, from the top
    if best.document_title and not where.startswith(best.document_title):
        where = " > ".join(t for t in (best.document_title, where) if t)
    where = where or best.document_id
    parts = units(best.text)
    wanted = terms(question)
    scores = [len(wanted & terms(u)) for u in parts]
    if not parts or max(scores) == 0:
        return f"The passages found do not clearly answer this; the closest is {where} [1]."
    top = max(range(len(parts)), key=lambda i: (scores[i], -i))
    lo, hi, size = top, top + 1, len(parts[top])
    grew = True
    while grew:  # widen around the best line, forward first, within the budget
        grew = False
        if hi < len(parts) and size + len(parts[hi]) <= QUOTE_CHARS:
            size, hi, grew = size + len(parts[hi]), hi + 1, True
        if lo > 0 and size + len(parts[lo - 1]) <= QUOTE_CHARS:
            lo, size, grew = lo - 1, size + len(parts[lo - 1]), True
    quoted = "\n".join(f"> {line}" for line in parts[lo:hi])
    return f"From {where} [1]:\n\n{quoted}"


def support(answer: str, passages: Sequence[retriever_pb2.Passage]) -> float:
    """The share of the answer's content words that occur in the passages (1.0: all)."""
    said = terms(answer)
    if not said:
        return 1.0
    known: set[str] = set()
    for p in passages:
        known |= terms(" ".join((p.document_title, p.chunk_title, p.text)))
    return len(said & known) / len(said)
