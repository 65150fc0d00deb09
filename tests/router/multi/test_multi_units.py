"""Multi-routing's pure parts: the policy grammar, vote normalisation and tie-breaking,
citation renumbering and the synthesis input packing (no services needed)."""

from __future__ import annotations

import pytest

from gearshift.router.core.plan import Plan
from gearshift.router.multi.branches import Branch, MultiPlan
from gearshift.router.multi.combining import Combination, renumber
from gearshift.router.multi.config import MultiConfig
from gearshift.router.multi.fanout import branch_deadline
from gearshift.router.multi.judge import parse_verdict
from gearshift.router.multi.policy import (
    MultiLimits,
    MultiPolicy,
    parse_header,
    policy_from_proto,
)
from gearshift.router.multi.synthesize import pack
from gearshift.router.multi.vote import normalise, vote
from gearshift.runtime.errors import InvalidArgument
from gearshift.v1 import router_pb2


def test_the_header_grammar_and_the_defaults() -> None:
    limits = MultiLimits(MultiPolicy(max_routes=1, combine="best", branch_timeout_s=9), 4)
    parsed = parse_header(" max=3 ; combine=Synthesize; min_ok=2;branch_timeout=2.5; ")
    policy = policy_from_proto(parsed, limits)
    assert (policy.max_routes, policy.combine, policy.min_successful) == (3, "synthesize", 2)
    assert policy.branch_timeout_s == 2.5 and policy.explicit and policy.multi
    # Unset parts come from the router's settings; a request without the field is single.
    assert policy_from_proto(parse_header("max=2"), limits).combine == "best"
    assert not policy_from_proto(router_pb2.MultiPolicy(), limits).multi
    # The policy is part of the cache scope: two policies never share an entry.
    assert policy.key() != policy_from_proto(parse_header("max=3"), limits).key()
    # Grace and branch deadline decide which answers are combined: they are in it too.
    keys = {
        policy_from_proto(parse_header(h), limits).key()
        for h in ("max=2", "max=2; grace=5", "max=2; branch_timeout=3")
    }
    assert len(keys) == 3


def test_grace_from_the_header_the_field_or_the_settings() -> None:
    limits = MultiLimits(MultiPolicy(max_routes=2, grace_s=2.0), 4)
    assert policy_from_proto(parse_header("max=2; grace=0.25"), limits).grace_s == 0.25
    assert policy_from_proto(parse_header("max=2; grace_s=0"), limits).grace_s == 0.0
    # Unset takes the router's multi_grace_s; an explicit 0 (cancel at once) does not.
    assert policy_from_proto(parse_header("max=2"), limits).grace_s == 2.0
    field = router_pb2.MultiPolicy(max_routes=2, grace_s=0.0)
    assert policy_from_proto(field, limits).grace_s == 0.0
    with pytest.raises(InvalidArgument) as bad:
        policy_from_proto(router_pb2.MultiPolicy(max_routes=2, grace_s=-1), limits)
    assert bad.value.violations[0].field == "multi.grace_s"


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("max=three", "x-gearshift-multi.max"),
        ("combine=mean", "x-gearshift-multi.combine"),
        ("branch_timeout=0", "x-gearshift-multi.branch_timeout"),
        ("grace=-1", "x-gearshift-multi.grace"),
        ("grace=soon", "x-gearshift-multi.grace"),
        ("grace_s=nan", "x-gearshift-multi.grace_s"),
        ("routes=2", "x-gearshift-multi.routes"),
        ("max", "x-gearshift-multi"),
    ],
)
def test_bad_header_parts_are_named(header: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        parse_header(header)
    assert bad.value.violations[0].field == field


def test_min_successful_from_the_defaults_follows_a_smaller_max() -> None:
    limits = MultiLimits(MultiPolicy(max_routes=3, min_successful=3), 4)
    assert policy_from_proto(parse_header("max=2"), limits).min_successful == 2
    with pytest.raises(InvalidArgument):
        policy_from_proto(parse_header("max=2; min_ok=3"), limits)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("(B) because the cache is faster", "b"),
        ("b.", "b"),
        ("The answer is: C", "c"),
        ("42 apples", "42"),
        ("**Paris**!", "paris"),
        ("Yes, it is.\nMore words.", "yes it is"),
    ],
)
def test_vote_normalises_short_answers(text: str, key: str) -> None:
    assert normalise(text) == key


def _branch(name: str, text: str, larger: bool = False) -> Branch:
    plan = Plan("r", "t", [], router_pb2.ChatRequest().sampling, router_pb2.RouteDecision())
    return Branch(name, "model", plan, status="ok", text=text, larger=larger)


async def _vote(*branches: Branch) -> tuple[str, str]:
    base = Plan("r", "t", [], router_pb2.ChatRequest().sampling, router_pb2.RouteDecision())
    plan = MultiPlan(base, MultiPolicy(max_routes=3), list(branches), [], [])
    c = Combination(plan, None, MultiConfig(), list(branches))  # type: ignore[arg-type]
    text = "".join([t async for t in vote(c)])
    return text, c.reason


async def test_the_majority_wins_and_a_tie_goes_to_the_larger_model() -> None:
    text, reason = await _vote(_branch("a", "B"), _branch("b", "(b)"), _branch("c", "A", True))
    assert text == "B" and "from 2 of 3" in reason
    text, reason = await _vote(_branch("a", "A"), _branch("b", "C.", True))
    assert text == "C." and "tie broken by the larger model" in reason


def test_citation_markers_are_renumbered_into_one_list() -> None:
    assert renumber("see [1] and [2], not [3]", 4, 2) == "see [5] and [6], not [3]"
    assert parse_verdict("2\nIt cites the runbook.", 3) == (1, "It cites the runbook.")
    assert parse_verdict("none of them", 3) is None and parse_verdict("7", 3) is None


def test_synthesis_inputs_are_packed_into_groups_that_fit() -> None:
    groups = pack(["a" * 300, "b" * 300, "c" * 900], 500)
    assert [sum(map(len, g)) for g in groups] == [300, 300, 500]


def _multi_routing(default: MultiPolicy) -> object:
    from types import SimpleNamespace

    from gearshift.router.multi.runner import MultiRouting

    config = MultiConfig(limits=MultiLimits(default, 4))
    return MultiRouting(config, SimpleNamespace(cache=None), None)  # type: ignore[arg-type]


def test_answers_that_do_not_merge_are_refused_when_asked_and_single_by_default() -> None:
    """Tool calls, n > 1, logprobs and schema-bound JSON are one model's output: a caller
    who asks for several routes with them is told so by name; the operator's multi default
    leaves such requests on one route instead of failing them."""
    from gearshift.v1 import common_pb2

    request = router_pb2.ChatRequest(
        messages=[common_pb2.ChatMessage(role="user", content="hi")],
        tools=[common_pb2.Tool(name="lookup", parameters_json="{}")],
        multi=router_pb2.MultiPolicy(max_routes=2),
    )
    request.sampling.n = 2
    routing = _multi_routing(MultiPolicy())
    with pytest.raises(InvalidArgument) as refused:
        routing.policy(request)  # type: ignore[attr-defined]
    assert "cannot be combined with tools" in str(refused.value)
    assert "cannot be combined with n" in str(refused.value)
    defaulted = _multi_routing(MultiPolicy(max_routes=3))
    request.ClearField("multi")
    assert not defaulted.policy(request).multi  # type: ignore[attr-defined]
    request.ClearField("tools")
    request.sampling.n = 1
    assert defaulted.policy(request).multi  # type: ignore[attr-defined]


def test_branches_leave_the_combining_call_its_reserve() -> None:
    now, deadline = 100.0, 160.0  # a request with a minute left
    # concat / vote: no reserve, the branch timeout or the request's end, whichever first.
    assert branch_deadline(deadline, now, 30.0, 0.0) == 130.0
    assert branch_deadline(deadline, now, 90.0, 0.0) == 160.0
    # synthesize / best: the reserve comes off the request's end ...
    assert branch_deadline(deadline, now, 90.0, 5.0) == 155.0
    assert branch_deadline(deadline, now, 30.0, 5.0) == 130.0  # (the branch timeout is earlier)
    # ... but never more than half of what is left, so branches still get time.
    assert branch_deadline(104.0, now, 30.0, 5.0) == 102.0
    assert branch_deadline(now, now, 30.0, 5.0) == now
