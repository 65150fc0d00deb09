"""The small-model tie-break of close selections: its answer validated, its fallbacks.

The real embedding model scores the options; the real small model (the session's SLM
server on vLLM) answers the tie-break. Every failure keeps the embedding choice and says
why in the selection's reason (which the RouteDecision, `route explain` and the span carry).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from gearshift.embeddings import shared_embedder
from gearshift.router.selection.selector import Candidate, Selection, Selector
from gearshift.router.selection.tiebreak import SmallModelTieBreak, close_candidates, parse
from gearshift.router.table.backends import BackendPool
from gearshift.router.table.routing_table import Route, RoutingTable, Snapshot, Source
from tests.router.conftest import dead_address

CARS = Source(
    name="car-manual",
    description="Car repair manual: brakes, tyres, engine faults and warning lights",
    endpoint="127.0.0.1:9",
)
INSURANCE = Source(
    name="insurance",
    description="Vehicle insurance policies: claims after accidents, cover and premiums",
    endpoint="127.0.0.1:9",
)
QUESTION = "My car's brakes squeal when I stop. What should I check?"


async def _embed_many(texts: list[str]) -> np.ndarray:  # type: ignore[type-arg]
    return shared_embedder().embed(texts)


def _vector(text: str) -> list[float]:
    return [float(x) for x in shared_embedder().embed([text])[0]]


def _candidate(name: str, score: float, excluded: bool = False) -> Candidate:
    return Candidate(name, "source", score, score, score + 0.1 if excluded else 0.0, "")


def test_only_close_options_over_the_threshold_are_put_to_the_model() -> None:
    ranked = (
        _candidate("a", 0.50),
        _candidate("b", 0.47),
        _candidate("c", 0.40),
        _candidate("d", 0.20),
    )
    selection = Selection(ranked, ranked[0], "selected")
    assert [c.name for c in close_candidates(selection, 0.25, 0.05)] == ["a", "b"]
    assert [c.name for c in close_candidates(selection, 0.25, 0.5)] == ["a", "b", "c"]
    assert close_candidates(selection, 0.6, 0.5) == []
    lone = Selection((ranked[0], _candidate("x", 0.49, excluded=True)), ranked[0], "")
    assert [c.name for c in close_candidates(lone, 0.25, 0.05)] == ["a"]
    top_excluded = Selection((_candidate("x", 0.6, excluded=True), *ranked), None, "")
    assert close_candidates(top_excluded, 0.25, 0.5) == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("The answer is 2", "no JSON object"),
        ('{"choice": two}', "invalid JSON"),
        ('{"reason": "cars"}', "bad answer"),
        ('{"choice": 3}', "not one of 1..2"),
        ('{"choice": 0}', "bad answer"),
    ],
)
def test_malformed_answers_are_refused_with_what_was_wrong(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse(text, 2)
    assert parse('Sure: {"choice": 2, "reason": "brakes"} done', 2).choice == 2


@pytest.fixture
async def table() -> AsyncIterator[RoutingTable]:
    table = RoutingTable(BackendPool())
    try:
        yield table
    finally:
        await table.pool.close()


def _selector(table: RoutingTable, timeout_s: float = 60.0, **kw: Any) -> Selector:
    tiebreak = SmallModelTieBreak(table, window=1.0, timeout_s=timeout_s, **kw)
    return Selector(_embed_many, threshold=0.05, margin=0.0, tiebreak=tiebreak)


def _snapshot(slm_address: str, served_model: str) -> Snapshot:
    small = Route(name="small", tier="slm", model=served_model, endpoints=(slm_address,))
    return Snapshot.of([small], 1, [INSURANCE, CARS])


async def test_without_a_usable_small_model_the_embedding_choice_stands(
    table: RoutingTable,
) -> None:
    embedding_choice = await Selector(_embed_many, 0.05, 0.0).select(
        _snapshot("127.0.0.1:9", "m"), _vector(QUESTION)
    )
    no_slm = Snapshot.of([], 1, [INSURANCE, CARS])
    settled = await _selector(table).select(no_slm, _vector(QUESTION), QUESTION)
    assert settled.chosen == embedding_choice.chosen
    assert "tie-break among car-manual, insurance: no usable small model, kept car-manual" in (
        settled.reason
    )
    dead = _snapshot(dead_address(), "m")
    settled = await _selector(table, timeout_s=5).select(dead, _vector(QUESTION), QUESTION)
    assert settled.chosen == embedding_choice.chosen
    assert "small failed (UNAVAILABLE), kept car-manual" in settled.reason


@pytest.mark.vllm
async def test_the_small_model_settles_a_close_call(table: RoutingTable, slm_server: Any) -> None:
    snapshot = _snapshot(slm_server.address, slm_server.served_model)
    settled = await _selector(table).select(snapshot, _vector(QUESTION), QUESTION)
    # The model's validated answer decides (which option it prefers is the model's call).
    assert settled.chosen is not None, settled.reason
    number = ["car-manual", "insurance"].index(settled.chosen.name) + 1
    assert settled.reason.startswith(
        f"selected source {settled.chosen.name}: small-model tie-break among car-manual, "
        f"insurance (small chose ({number})"
    ), settled.reason
    assert [c.name for c in settled.candidates] == ["car-manual", "insurance"]


@pytest.mark.vllm
async def test_a_slow_or_malformed_answer_keeps_the_embedding_choice(
    table: RoutingTable, slm_server: Any
) -> None:
    snapshot = _snapshot(slm_server.address, slm_server.served_model)
    slow = await _selector(table, timeout_s=0.001).select(snapshot, _vector(QUESTION), QUESTION)
    assert slow.chosen is not None and slow.chosen.name == "car-manual"
    assert "no answer within 0.001s, kept car-manual" in slow.reason
    # One token cannot hold the JSON object: the answer is refused, the choice kept.
    cut = await _selector(table, max_tokens=1).select(snapshot, _vector(QUESTION), QUESTION)
    assert cut.chosen is not None and cut.chosen.name == "car-manual"
    assert "no JSON object in the answer, kept car-manual" in cut.reason
