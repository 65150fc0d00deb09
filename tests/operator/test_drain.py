"""A model server's drain covers its longest allowed answer, not a fixed 30 s.

A rollout's SIGTERM lands on replicas in the middle of generations; the server lets them
run for its grace period (`GRACE_PERIOD_S`), and the kubelet kills it after
`terminationGracePeriodSeconds`. Both come from the route: the longest answer it allows
(tokens) at the floor decode speed (tokens/s), plus the operator's base drain.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from gearshift.routes import ModelRoute
from gearshift_operator import children
from gearshift_operator.settings import Settings
from tests.operator.crd_check import validate

EXAMPLES = Path(__file__).parents[2] / "examples/modelroutes"


def _doc(name: str, **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    doc = copy.deepcopy(doc)
    for key, value in spec.items():
        *parents, leaf = key.split("__")
        target = doc["spec"]
        for parent in parents:
            target = target.setdefault(parent, {})
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return doc


def _pod(doc: dict[str, Any], settings: Settings) -> tuple[int, int]:
    """(the server's grace period, the pod's terminationGracePeriodSeconds)."""
    assert validate(doc) == [], "the API server would refuse this route"
    route = ModelRoute.model_validate(doc)
    pod = children.deployment(route, settings)["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"] if "value" in e}
    grace = next(v for k, v in env.items() if k.endswith("_GRACE_PERIOD_S"))
    return int(grace), int(pod["terminationGracePeriodSeconds"])


def test_default_drain_lets_the_longest_answer_finish_at_the_floor_speed() -> None:
    # small.yaml: engine.maxModelLen 4096; default floor 10 tokens/s, base drain 30 s.
    drain, termination = _pod(_doc("small"), Settings())
    assert drain == 410 + 30
    assert termination == 5 + drain + 15  # preStop + drain + margin: the kill comes after


def test_a_declared_floor_speed_sizes_the_drain() -> None:
    drain, _ = _pod(_doc("small", lifecycle={"floorTokensPerSecond": 40}), Settings())
    assert drain == 103 + 30  # ceil(4096 / 40) + base
    # The operator's default floor, for routes that declare none.
    drain, _ = _pod(_doc("small"), Settings(floor_tokens_per_second=25, drain_seconds=10))
    assert drain == 164 + 10


def test_the_longest_answer_is_the_context_window_the_route_allows() -> None:
    no_len = _doc("small", engine__maxModelLen=None)
    assert _pod(no_len, Settings())[0] == 205 + 30  # the model server's own 2048
    declared = _doc("small", engine__maxModelLen=None, capabilities={"contextTokens": 1000})
    assert _pod(declared, Settings())[0] == 100 + 30


def test_upstream_routes_derive_only_what_they_declare() -> None:
    # The provider's own limit is unknown without capabilities.contextTokens: the base drain.
    unknown = _doc("provider", capabilities={"tools": True})
    assert _pod(unknown, Settings(drain_seconds=45))[0] == 45
    declared = _doc("provider", lifecycle={"floorTokensPerSecond": 200})
    assert _pod(declared, Settings())[0] == 640 + 30  # 128000 tokens at 200 tokens/s


def test_a_derived_drain_is_bounded_and_an_explicit_one_wins() -> None:
    # 128000 tokens at 10 tokens/s would be 3.5 hours of GPU held by one stopping pod.
    assert _pod(_doc("provider"), Settings(max_drain_seconds=1800))[0] == 1800
    explicit = _doc("small", lifecycle={"drainSeconds": 7200})
    drain, termination = _pod(explicit, Settings(max_drain_seconds=1800))
    assert (drain, termination) == (7200, 5 + 7200 + 15)


@pytest.mark.parametrize("bad", [0, -1, 200000])
def test_a_floor_speed_outside_its_range_is_refused_on_both_sides(bad: float) -> None:
    doc = _doc("small", lifecycle={"floorTokensPerSecond": bad})
    assert any("floorTokensPerSecond" in e for e in validate(doc))
    with pytest.raises(ValidationError, match=r"floor_tokens_per_second|floorTokensPerSecond"):
        ModelRoute.model_validate(doc)
