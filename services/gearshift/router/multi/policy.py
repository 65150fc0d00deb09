"""The multi-routing policy of one request: from the gRPC field, the HTTP header, defaults.

A caller asks with `ChatRequest.multi` or the `x-gearshift-multi` header
(`max=3; combine=synthesize; min_ok=1; branch_timeout=5; grace=0.5`); what it leaves out comes from
the router's `multi_*` settings. Bad values are refused with the field named, never
silently clamped: a caller who asked for five branches and got three would not know.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gearshift.runtime.errors import FieldViolation, InvalidArgument
from gearshift.v1 import router_pb2

STRATEGIES = ("concat", "synthesize", "best", "vote")
HEADER = "x-gearshift-multi"
# Header keys and the policy field each sets (long names accepted too).
HEADER_KEYS = {
    "max": "max_routes",
    "max_routes": "max_routes",
    "combine": "combine",
    "min_ok": "min_successful",
    "min_successful": "min_successful",
    "branch_timeout": "branch_timeout_s",
    "branch_timeout_s": "branch_timeout_s",
    "grace": "grace_s",
    "grace_s": "grace_s",
}
# Longest grace or branch timeout a header may ask for, in seconds.
MAX_HEADER_SECONDS = 3600.0


@dataclass(frozen=True)
class MultiPolicy:
    """How many branches, how to combine them, how many must answer, how long each may take.

    `grace_s` is how long the branches still running may go on once `min_successful`
    have answered; then they are cancelled (their answers are not needed).
    """

    max_routes: int = 1
    combine: str = "concat"
    min_successful: int = 1
    branch_timeout_s: float = 30.0
    grace_s: float = 0.0
    explicit: bool = False  # the caller asked (a pinned model then is an error, not ignored)

    @property
    def multi(self) -> bool:
        return self.max_routes > 1

    def key(self) -> str:
        """The part of the cache scope that tells combined answers apart (and from single).

        Every field that changes which branches make it into the answer is in it: a
        grace of 0 combines the first `min_successful` answers, a long one all of them.
        """
        return (
            f"multi/max={self.max_routes};combine={self.combine};min_ok={self.min_successful};"
            f"branch_timeout={self.branch_timeout_s:g};grace={self.grace_s:g}"
        )

    def describe(self) -> str:
        return (
            f"max={self.max_routes}; combine={self.combine}; min_ok={self.min_successful}; "
            f"branch_timeout={self.branch_timeout_s:g}; grace={self.grace_s:g}"
        )


@dataclass(frozen=True)
class MultiLimits:
    """The operator's defaults and bounds (router settings `multi_*`)."""

    default: MultiPolicy = MultiPolicy()
    max_routes_limit: int = 4


def policy_from_proto(
    field: router_pb2.MultiPolicy, limits: MultiLimits, prefix: str = "multi"
) -> MultiPolicy:
    """The request's policy: its non-zero fields over the defaults, validated."""
    d = limits.default
    explicit = field.ByteSize() > 0
    policy = replace(
        d,
        max_routes=field.max_routes or d.max_routes,
        combine=field.combine or d.combine,
        min_successful=field.min_successful or d.min_successful,
        branch_timeout_s=field.branch_timeout_s or d.branch_timeout_s,
        # 0 is a real grace (cancel at once), so only an unset field takes the default.
        grace_s=field.grace_s if field.HasField("grace_s") else d.grace_s,
        explicit=explicit,
    )
    # min_successful from the defaults may exceed a smaller max the caller asked for.
    if not field.min_successful and policy.min_successful > policy.max_routes:
        policy = replace(policy, min_successful=policy.max_routes)
    validate(policy, limits, prefix)
    return policy


def validate(policy: MultiPolicy, limits: MultiLimits, prefix: str) -> None:
    bad: list[FieldViolation] = []
    if not 1 <= policy.max_routes <= limits.max_routes_limit:
        bad.append(
            FieldViolation(
                f"{prefix}.max_routes",
                f"must be in [1, {limits.max_routes_limit}] (router setting "
                "multi_max_routes_limit)",
            )
        )
    if policy.combine not in STRATEGIES:
        bad.append(FieldViolation(f"{prefix}.combine", f"use one of {', '.join(STRATEGIES)}"))
    if not 1 <= policy.min_successful <= max(policy.max_routes, 1):
        bad.append(FieldViolation(f"{prefix}.min_successful", "must be in [1, max_routes]"))
    if not (math.isfinite(policy.branch_timeout_s) and policy.branch_timeout_s > 0):
        bad.append(FieldViolation(f"{prefix}.branch_timeout_s", "must be a positive number"))
    if not (math.isfinite(policy.grace_s) and policy.grace_s >= 0):
        bad.append(FieldViolation(f"{prefix}.grace_s", "must be a number of seconds >= 0"))
    if bad:
        raise InvalidArgument(bad)


def parse_header(value: str) -> router_pb2.MultiPolicy:
    """`max=3; combine=synthesize; min_ok=1` as a MultiPolicy message (ranges checked later).

    Syntax errors name `x-gearshift-multi.<key>` so a 400 says which part to fix.
    """
    out = router_pb2.MultiPolicy()
    bad: list[FieldViolation] = []
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key, raw = key.strip().lower(), raw.strip()
        name = HEADER_KEYS.get(key)
        where = f"{HEADER}.{key}"
        if not sep or name is None:
            bad.append(
                FieldViolation(
                    where if sep else HEADER,
                    f"expected key=value pairs separated by ';' with keys "
                    f"max, combine, min_ok, branch_timeout, grace (got {part!r})",
                )
            )
            continue
        if name == "combine":
            if raw.lower() not in STRATEGIES:
                bad.append(FieldViolation(where, f"use one of {', '.join(STRATEGIES)}"))
            else:
                out.combine = raw.lower()
        elif name == "branch_timeout_s":
            seconds = _seconds(raw)
            if not 0 < seconds <= MAX_HEADER_SECONDS:
                bad.append(FieldViolation(where, "must be a number of seconds in (0, 3600]"))
            else:
                out.branch_timeout_s = seconds
        elif name == "grace_s":
            seconds = _seconds(raw)
            if not 0 <= seconds <= MAX_HEADER_SECONDS:
                bad.append(FieldViolation(where, "must be a number of seconds in [0, 3600]"))
            else:
                out.grace_s = seconds
        else:
            if not raw.isdigit() or not 1 <= int(raw) <= 64:
                bad.append(FieldViolation(where, "must be a whole number >= 1"))
            else:
                setattr(out, name, int(raw))
    if bad:
        raise InvalidArgument(bad)
    return out


def _seconds(raw: str) -> float:
    """A header's number of seconds; NaN (out of every range) when it is not a finite number."""
    try:
        seconds = float(raw)
    except ValueError:
        return math.nan
    return seconds if math.isfinite(seconds) else math.nan
