"""The multi-routing settings the pipeline reads (a subset of the router's Settings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gearshift.router.multi.policy import MultiLimits

JUDGE_TIERS = ("llm", "slm")


@dataclass(frozen=True)
class MultiConfig:
    limits: MultiLimits = field(default_factory=MultiLimits)
    # Options within this much of the best option's score join the plan (over threshold).
    margin: float = 0.1
    # The tier whose model judges `best` (the large one by default).
    judge_tier: str = "llm"
    # Characters of branch answers and passages one synthesis prompt may hold; more are
    # summarised in a tree first.
    synthesis_context_chars: int = 6000
    # Seconds at the end of the request kept for the combining call of synthesize / best
    # (branches must answer before; at most half of the time left).
    combine_reserve_s: float = 5.0
    # Tokens the judge may write (its pick and one sentence why).
    judge_max_tokens: int = 64
