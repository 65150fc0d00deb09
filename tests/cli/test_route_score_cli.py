"""`gearshift route score`: the router's own decision, offline, for every line of a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gearshift.cli.main import main
from gearshift.cli.score import score_objects
from gearshift.routes.local import local_default_routes
from gearshift.v1 import common_pb2, router_pb2
from tests.router.conftest import KEY_A, dead_address, start_router, stop_router

ROWS = [
    {"prompt": "hi", "id": 1},
    {"prompt": "Prove that there are infinitely many primes.", "label": "hard"},
    {"prompt": "What is 2+2?", "answer": "4."},
    {"prompt": "Explain photosynthesis.", "answer": "I'm sorry, I cannot help with that."},
]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _score(tmp_path: Path, *extra: str) -> list[dict[str, object]]:
    out = tmp_path / "out.jsonl"
    assert (
        main(["route", "score", str(_write(tmp_path / "in.jsonl", ROWS)), "-o", str(out), *extra])
        == 0
    )
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_writes_the_objects_back_with_difficulty_tier_and_escalate(tmp_path: Path) -> None:
    scored = _score(tmp_path, "--share", "0.3")
    assert len(scored) == len(ROWS)
    for row, out in zip(ROWS, scored, strict=True):
        assert {k: out[k] for k in row} == row  # every input field kept as it was
        assert 0.0 <= float(out["difficulty"]) <= 1.0  # type: ignore[arg-type]
        assert out["tier"] in ("slm", "llm")
        assert ("escalate" in out) == ("answer" in row)
    assert scored[0]["tier"] == "slm" and scored[1]["tier"] == "llm"
    assert float(scored[3]["escalate"]) > float(scored[2]["escalate"])  # type: ignore[arg-type]


async def test_matches_a_running_routers_decision(tmp_path: Path) -> None:
    """Same difficulty and threshold as the router's Route RPC, at the router's defaults."""
    scored, _ = await score_objects([dict(r) for r in ROWS], None, None)
    routes = local_default_routes(dead_address(), "small", dead_address(), "large")
    running = await start_router(tmp_path, routes)
    try:
        for out in scored:
            request = router_pb2.ChatRequest(
                model="auto",
                messages=[common_pb2.ChatMessage(role="user", content=str(out["prompt"]))],
                cache_policy=router_pb2.CACHE_POLICY_BYPASS,
            )
            decision = await running.stub.Route(
                request, metadata=[("authorization", f"Bearer {KEY_A}")], timeout=60
            )
            assert decision.difficulty == pytest.approx(out["difficulty"], abs=2e-6)
            tier = "llm" if decision.difficulty >= decision.threshold else "slm"
            assert tier == out["tier"]
    finally:
        await stop_router(running)


def test_bad_input_is_refused_with_the_line_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n', encoding="utf-8")
    assert main(["route", "score", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["route", "score", str(bad), "--share", "1.5"]) == 2
    assert main(["route", "score", str(tmp_path / "missing.jsonl")]) == 2
