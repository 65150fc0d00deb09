"""Selection by option metadata with the real embedding model (no model call)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gearshift.embeddings import shared_embedder
from gearshift.router.selection.selector import OptionIndex, Selector, options_of, select
from gearshift.router.table.routing_table import Route, Snapshot, Source

DOCS = Source(
    name="gearshift-docs",
    description="Gearshift's own documentation: how to install, configure and operate the "
    "router, cache, SLM server, proxy, operator and Helm chart",
    endpoint="127.0.0.1:9",
    examples=("How do I set the cache's similarity threshold?",),
)
RUNBOOKS = Source(
    name="runbooks",
    description="Runbooks of the platform team: incidents, on-call, GPU node outages",
    endpoint="127.0.0.1:9",
    examples=("What do I do when a GPU node goes down?",),
    excludes=("Write me a poem about GPUs",),
)
CODER = Route(
    name="coder",
    tier="llm",
    model="coder-model",
    endpoints=("127.0.0.1:9",),
    description="Writing and fixing program code in Python, Go and Rust",
    examples=("Why does my Python script raise an exception?",),
)


async def _embed_many(texts: list[str]) -> np.ndarray:  # type: ignore[type-arg]
    return shared_embedder().embed(texts)


def _vector(text: str) -> list[float]:
    return [float(x) for x in shared_embedder().embed([text])[0]]


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    plain = Route(name="small", tier="slm", model="m", endpoints=("127.0.0.1:9",))
    return Snapshot.of([plain, CODER], 1, [DOCS, RUNBOOKS])


def test_options_are_sources_and_described_routes_only(snapshot: Snapshot) -> None:
    names = [(o.name, o.kind) for o in options_of(snapshot)]
    assert names == [("gearshift-docs", "source"), ("runbooks", "source"), ("coder", "model")]


async def test_questions_go_to_the_option_they_are_about(snapshot: Snapshot) -> None:
    selector = Selector(_embed_many, threshold=0.35, margin=0.0)
    cases = {
        "How do I set the cache's maximum false-hit rate?": "gearshift-docs",
        "The GPU node in zone b is down, what is the procedure?": "runbooks",
        "Fix this Python function that raises a KeyError": "coder",
    }
    for question, expected in cases.items():
        selection = await selector.select(snapshot, _vector(question))
        assert selection.chosen is not None, selection.reason
        assert selection.chosen.name == expected, selection.reason
        # Every option is scored and explained, best first.
        assert len(selection.candidates) == 3
        scores = [c.score for c in selection.candidates]
        assert scores == sorted(scores, reverse=True)
    nothing = await selector.select(snapshot, _vector("Why is the sky blue?"))
    assert nothing.chosen is None
    assert nothing.reason.startswith("no option fits")


async def test_an_exclude_keeps_a_question_away(snapshot: Snapshot) -> None:
    selector = Selector(_embed_many, threshold=0.0, margin=0.0)
    selection = await selector.select(snapshot, _vector("Write me a poem about GPUs"))
    runbooks = next(c for c in selection.candidates if c.name == "runbooks")
    assert runbooks.excluded and runbooks.score < 0
    assert selection.chosen is None or selection.chosen.name != "runbooks"


def test_margin_turns_a_close_call_into_no_selection(snapshot: Snapshot) -> None:
    index = OptionIndex.build(options_of(snapshot), shared_embedder().embed)
    candidates = index.score(_vector("How do I operate the router during a GPU outage?"))
    gap = candidates[0].score - candidates[1].score
    assert select(candidates, 0.0, gap / 2).chosen is not None
    close = select(candidates, 0.0, gap + 0.01)
    assert close.chosen is None and "closer than the margin" in close.reason


def test_selection_over_100_options_takes_well_under_a_millisecond() -> None:
    rng = np.random.default_rng(0)
    n_texts = 600  # 100 options with a description and five examples each
    matrix = rng.standard_normal((n_texts, 384)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    sources = [
        Source(f"s{i}", f"d{i}", "h:1", examples=tuple(f"e{i}-{j}" for j in range(5)))
        for i in range(100)
    ]
    index = OptionIndex.build(options_of(Snapshot.of([], 1, sources)), lambda _: matrix)
    query = matrix[0]
    for _ in range(20):
        select(index.score(query), 0.35, 0.0)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        select(index.score(query), 0.35, 0.0)
        times.append(time.perf_counter() - start)
    assert float(np.median(times)) < 0.005  # the benchmark reports the real figure
