"""Pure functions: when a route whose pods keep failing to start gives back its GPUs.

A route whose pods restart `failed_start_limit` times without becoming Ready (a fetch
that cannot succeed, an engine that runs out of memory while loading) is scaled to zero
replicas: condition Degraded, reason BlockedByFailedLoad. It tries again when its pod
template changes (a spec edit that changes what the pods run, the usual fix), or after a
back-off that doubles per failed attempt up to `failed_start_backoff_max_s`.

The state lives in one annotation on the route (JSON), not in the operator's memory, so
a restarted or newly elected operator keeps the back-off; removing the annotation
(`kubectl annotate modelroute NAME gearshift.dev/failed-load-`) retries at once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

ANNOTATION = "gearshift.dev/failed-load"
REASON = "BlockedByFailedLoad"


@dataclass(frozen=True)
class FailedLoad:
    """The route's failed-load record: which pod template failed, how often, until when."""

    templateHash: str  # camelCase: the JSON keys of the annotation
    attempt: int
    blockedUntil: float | None  # epoch seconds; None: retrying now
    message: str = ""

    def blocked(self, now: float) -> bool:
        return self.blockedUntil is not None and now < self.blockedUntil

    def to_annotation(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def parse(annotations: dict[str, str] | None) -> FailedLoad | None:
    """The record in the route's annotations; None when absent or unreadable (retry)."""
    raw = (annotations or {}).get(ANNOTATION)
    if not raw:
        return None
    try:
        data: Any = json.loads(raw)
        until = data.get("blockedUntil")
        return FailedLoad(
            templateHash=str(data["templateHash"]),
            attempt=max(1, int(data["attempt"])),
            blockedUntil=None if until is None else float(until),
            message=str(data.get("message") or ""),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """base, 2 x base, 4 x base, ... never above max."""
    return float(min(max_s, base_s * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class Verdict:
    """What to run now and the record to keep (None: remove the annotation)."""

    blocked: bool
    record: FailedLoad | None


def decide(
    record: FailedLoad | None,
    template_hash: str,
    failed_starts: int,
    healthy: bool,
    now: float,
    *,
    limit: int,
    base_s: float,
    max_s: float,
    why: str = "",
) -> Verdict:
    """Blocks after `limit` failed starts; unblocks on a new template or when the back-off ends.

    `healthy`: every wanted replica is Ready with no pod problem (the record then goes).
    `limit` 0 disables the back-off.
    """
    if record is not None and record.templateHash != template_hash:
        record = None  # the spec changed what the pods run: try it at once, from scratch
    if record is not None and record.blocked(now):
        return Verdict(True, record)
    if record is not None and record.blockedUntil is not None:
        record = replace(record, blockedUntil=None)  # back-off over: one more attempt
    if limit > 0 and failed_starts >= limit:
        attempt = (record.attempt + 1) if record is not None else 1
        until = now + backoff_s(attempt, base_s, max_s)
        return Verdict(True, FailedLoad(template_hash, attempt, until, why[:500]))
    if healthy:
        return Verdict(False, None)
    return Verdict(False, record)


def message(record: FailedLoad, failed_starts_limit: int) -> str:
    """The Degraded condition's message: why, what was released, when it retries."""
    assert record.blockedUntil is not None
    at = datetime.fromtimestamp(record.blockedUntil, UTC).replace(microsecond=0)
    when = at.isoformat().replace("+00:00", "Z")
    cause = f": {record.message}" if record.message else ""
    return (
        f"pods failed to start {failed_starts_limit} or more times{cause}. Scaled to 0 "
        f"replicas to release their GPUs (attempt {record.attempt}); retries at {when}, when "
        "the spec changes what the pods run, or when the annotation "
        f"{ANNOTATION} is removed"
    )
