"""Selection: which option (a data source, or a model route with metadata) fits a question.

Every option is described by its metadata: a description, examples it should catch and
excludes it should not. When the routing table changes, those texts are embedded once into
one matrix; a question is then scored against every option with one matrix product over
the query embedding the router already computed (no model call, well under a millisecond
for a hundred options). An option's score is its best cosine similarity to its description
or examples; an option whose nearest text is one of its excludes is penalised below any
threshold. The best option is chosen when its score reaches `threshold` and leads the
runner-up by at least `margin`; otherwise the outcome is explicitly "no option fits" and
the model routes decide by difficulty, as without sources.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from gearshift.router.table.routing_table import Route, Snapshot, Source

FloatArray = npt.NDArray[np.float32]
OptionKind = Literal["source", "model"]
# Defaults of the router's selection_threshold / selection_margin settings, calibrated with
# `gearshift route eval` (docs/router.md has the figures).
DEFAULT_THRESHOLD = 0.25
DEFAULT_MARGIN = 0.0
# Subtracted from an excluded option's score: it can never reach a threshold in [0, 1].
EXCLUDE_PENALTY = 1.0


@dataclass(frozen=True)
class Option:
    """One selectable option and the texts that describe it."""

    name: str
    kind: OptionKind
    positives: tuple[str, ...]  # the description, then the examples
    excludes: tuple[str, ...] = ()


def options_of(snapshot: Snapshot) -> list[Option]:
    """The snapshot's options: every data source, and every model route with a description."""
    out = [_option(s, "source") for s in snapshot.sources]
    out += [_option(r, "model") for r in snapshot.routes if r.description]
    return out


def _option(item: Route | Source, kind: OptionKind) -> Option:
    positives = tuple(t for t in (item.description, *item.examples) if t)
    return Option(item.name, kind, positives, tuple(item.excludes))


@dataclass(frozen=True)
class Candidate:
    """One option's score for one question, with how it was reached."""

    name: str
    kind: OptionKind
    score: float
    similarity: float  # best cosine to the description or an example
    exclude_similarity: float  # best cosine to an exclude (0 without excludes)
    matched: str  # the text that matched best

    @property
    def excluded(self) -> bool:
        return self.exclude_similarity > 0.0 and self.exclude_similarity >= self.similarity


@dataclass(frozen=True)
class Selection:
    """The outcome: every candidate, best first, and the chosen one (None: nothing fits)."""

    candidates: tuple[Candidate, ...]
    chosen: Candidate | None
    reason: str


@dataclass
class OptionIndex:
    """The embedded metadata of one snapshot's options, ready for one matrix product."""

    options: list[Option]
    matrix: FloatArray  # (texts, dim): every option's positives, then excludes, in order
    owner: npt.NDArray[np.intp]  # option index of each row
    negative: npt.NDArray[np.bool_]  # True for the rows that are excludes
    texts: list[str] = field(default_factory=list)
    version: int = -1

    @classmethod
    def build(
        cls,
        options: Sequence[Option],
        embed: Callable[[list[str]], FloatArray],
        version: int = -1,
    ) -> OptionIndex:
        texts: list[str] = []
        owner: list[int] = []
        negative: list[bool] = []
        for i, option in enumerate(options):
            for text in option.positives:
                texts.append(text)
                owner.append(i)
                negative.append(False)
            for text in option.excludes:
                texts.append(text)
                owner.append(i)
                negative.append(True)
        matrix = embed(texts) if texts else np.zeros((0, 384), dtype=np.float32)
        return cls(
            list(options),
            np.ascontiguousarray(matrix, dtype=np.float32),
            np.asarray(owner, dtype=np.intp),
            np.asarray(negative, dtype=np.bool_),
            texts,
            version,
        )

    def score(self, query: Sequence[float] | FloatArray) -> list[Candidate]:
        """Every option's candidate for a (unit) query vector, best first."""
        n = len(self.options)
        if n == 0:
            return []
        sims = self.matrix @ np.asarray(query, dtype=np.float32)
        positive = np.where(self.negative, -np.inf, sims)
        negative = np.where(self.negative, sims, -np.inf)
        best_pos = np.full(n, -np.inf, dtype=np.float32)
        best_neg = np.full(n, -np.inf, dtype=np.float32)
        np.maximum.at(best_pos, self.owner, positive)
        np.maximum.at(best_neg, self.owner, negative)
        # The row of each option's best positive text, for the explanation.
        order = np.lexsort((-positive, self.owner))
        first = np.searchsorted(self.owner[order], np.arange(n))
        out = []
        for i, option in enumerate(self.options):
            pos = float(best_pos[i]) if np.isfinite(best_pos[i]) else 0.0
            neg = max(float(best_neg[i]), 0.0) if np.isfinite(best_neg[i]) else 0.0
            excluded = neg > 0.0 and neg >= pos
            matched = self.texts[int(order[first[i]])] if first[i] < len(order) else ""
            out.append(
                Candidate(
                    option.name,
                    option.kind,
                    pos - EXCLUDE_PENALTY if excluded else pos,
                    pos,
                    neg,
                    matched,
                )
            )
        out.sort(key=lambda c: c.score, reverse=True)
        return out


def select(candidates: Sequence[Candidate], threshold: float, margin: float) -> Selection:
    """Applies the threshold and margin to scored candidates (best first)."""
    ranked = tuple(candidates)
    if not ranked:
        return Selection(ranked, None, "no options with metadata")
    top = ranked[0]
    if top.excluded:
        return Selection(
            ranked,
            None,
            f"no option fits: {top.name} matches its excludes "
            f"({top.exclude_similarity:.3f} >= {top.similarity:.3f})",
        )
    if top.score < threshold:
        return Selection(
            ranked,
            None,
            f"no option fits: best {top.name} {top.score:.3f} < threshold {threshold:.3f}",
        )
    if len(ranked) > 1 and top.score - ranked[1].score < margin:
        runner = ranked[1]
        return Selection(
            ranked,
            None,
            f"no clear option: {top.name} {top.score:.3f} and {runner.name} "
            f"{runner.score:.3f} are closer than the margin {margin:.3f}",
        )
    return Selection(
        ranked,
        top,
        f"selected {top.kind} {top.name}: similarity {top.score:.3f} >= threshold "
        f"{threshold:.3f} (nearest: {top.matched[:60]!r})",
    )


class TieBreak(Protocol):
    """Settles a selection whose best options are close (see selection/tiebreak.py)."""

    window: float

    async def settle(
        self,
        selection: Selection,
        question: str,
        options: Sequence[Option],
        snapshot: Snapshot,
        threshold: float,
        time_remaining: float,
    ) -> Selection: ...


class Selector:
    """Keeps the option index in step with the routing table and selects per question.

    The index is rebuilt (option texts embedded in one batch) when a new snapshot changes
    the options; a snapshot with the same options only takes the new version number.
    """

    def __init__(
        self,
        embed_many: Callable[[list[str]], Awaitable[FloatArray]],
        threshold: float = DEFAULT_THRESHOLD,
        margin: float = DEFAULT_MARGIN,
        tiebreak: TieBreak | None = None,
    ) -> None:
        self.embed_many = embed_many
        self.threshold = threshold
        self.margin = margin
        self.tiebreak = tiebreak
        self._index: OptionIndex | None = None
        self._lock = asyncio.Lock()

    async def index_for(self, snapshot: Snapshot) -> OptionIndex:
        index = self._index
        if index is not None and index.version == snapshot.version:
            return index
        async with self._lock:
            index = self._index
            if index is not None and index.version >= snapshot.version:
                return index
            options = options_of(snapshot)
            if index is not None and index.options == options:
                index.version = snapshot.version
                return index
            texts = [t for o in options for t in (*o.positives, *o.excludes)]
            vectors = await self.embed_many(texts) if texts else None

            def embedded(_: list[str]) -> FloatArray:
                assert vectors is not None
                return vectors

            self._index = OptionIndex.build(options, embedded, snapshot.version)
            return self._index

    def warm(self, snapshot: Snapshot) -> None:
        """Starts re-embedding for a new snapshot in the background (a table listener)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): the first request builds it
        task = loop.create_task(self.index_for(snapshot))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def select(
        self,
        snapshot: Snapshot,
        embedding: Sequence[float],
        question: str = "",
        time_remaining: float = float("inf"),
    ) -> Selection:
        """The selection for a question; close calls go to the tie-break when one is set."""
        index = await self.index_for(snapshot)
        selection = select(index.score(embedding), self.threshold, self.margin)
        if self.tiebreak is None or not question:
            return selection
        return await self.tiebreak.settle(
            selection, question, index.options, snapshot, self.threshold, time_remaining
        )
