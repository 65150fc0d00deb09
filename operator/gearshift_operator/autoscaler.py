"""Replica decisions from live load: a pure function plus the code that reads the load.

`decide()` holds all the policy (HPA-style, so operators' intuition carries over):
- desired = ceil(total load / per-replica target), ignored within a 10 % tolerance band;
- scale-up is immediate but capped per step (x factor, at least +step);
- scale-down takes the highest recommendation of the stabilisation window, so a short dip
  never removes replicas that the next burst needs (no flapping);
- zero only for scaleToZero routes after an idle period; the router's demand signal
  brings a cold route back to one replica;
- no scale-up while replicas are still starting (or failing): they are counted, not
  added to again.
It takes `now` as an argument, so tests drive it with virtual time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gearshift.routes.model_route import ModelRoute
from gearshift.runtime.telemetry import insecure_channel
from gearshift.v1 import inference_pb2, inference_pb2_grpc
from gearshift_operator.settings import Settings

TOLERANCE = 0.1


@dataclass(frozen=True)
class Policy:
    """The route's scaling bounds and behaviour."""

    min_replicas: int
    max_replicas: int
    target: float
    stabilization_s: float
    scale_to_zero: bool = False
    up_factor: float = 2.0
    up_min_step: int = 1
    idle_before_zero_s: float = 600.0

    @classmethod
    def for_route(cls, route: ModelRoute, settings: Settings) -> Policy:
        auto = route.spec.autoscaling
        assert auto is not None
        return cls(
            min_replicas=route.spec.replicas.min,
            max_replicas=route.spec.replicas.max,
            target=auto.target,
            stabilization_s=auto.scale_down_stabilization_seconds,
            scale_to_zero=auto.scale_to_zero,
            up_factor=settings.scale_up_max_factor,
            up_min_step=settings.scale_up_min_step,
            idle_before_zero_s=settings.idle_seconds_before_zero,
        )


@dataclass
class ScaleState:
    """What the decision remembers between ticks (in memory, and in `status.autoscaler`)."""

    recommendations: list[tuple[float, int]] = field(default_factory=list)
    last_busy_at: float | None = None


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str


def decide(
    policy: Policy,
    current: int,
    load: float | None,
    now: float,
    state: ScaleState,
    demand: bool = False,
    starting: int = 0,
    failing: int = 0,
) -> Decision:
    """The replica count to run now. `load` is the summed metric over ready replicas,
    None when no replica could report (then nothing changes except a demanded wake-up).
    `starting` pods (not Ready yet, nothing wrong) and `failing` pods (crashlooping,
    unpullable, unschedulable) hold scale-ups: the queue at the ready replicas keeps
    growing while a model loads for minutes, and adding replicas for it would start more
    GPU pods that the loading ones are about to make unnecessary (or that fail the same
    way). Mutates `state` (recommendation history, last busy time)."""
    floor = policy.min_replicas
    if state.last_busy_at is None:
        # Fresh state (new route or operator restart): pretend we were busy just now,
        # so neither the window nor the idle timer can shrink anything prematurely.
        state.last_busy_at = now
        state.recommendations.append((now, current))
    if demand or (load is not None and load > 0):
        state.last_busy_at = now

    if current == 0:
        if demand:
            return Decision(max(1, floor), "DemandWhileCold")
        return Decision(max(0, floor), "Idle" if floor == 0 else "BelowMinimum")

    if load is None:
        return Decision(_clamp(current, policy), "NoLoadReport")

    ratio = load / (current * policy.target)
    raw = current if abs(ratio - 1.0) <= TOLERANCE else math.ceil(load / policy.target)
    idle_for = now - state.last_busy_at
    if policy.scale_to_zero and load == 0 and not demand and idle_for >= policy.idle_before_zero_s:
        lower = 0
    else:
        lower = max(1, floor)
    recommendation = max(lower, min(policy.max_replicas, raw))

    window_start = now - policy.stabilization_s
    state.recommendations = [(t, n) for t, n in state.recommendations if t > window_start]
    state.recommendations.append((now, recommendation))

    if recommendation > current and failing:
        return Decision(current, "ReplicasFailing")
    if recommendation > current and starting:
        return Decision(current, "ReplicasStillLoading")
    if recommendation > current:
        cap = max(math.floor(current * policy.up_factor), current + policy.up_min_step)
        return Decision(min(recommendation, cap, policy.max_replicas), "LoadAboveTarget")
    stabilized = max(n for _, n in state.recommendations)
    if stabilized < current:
        reason = "IdleScaleToZero" if stabilized == 0 else "LoadBelowTarget"
        return Decision(_clamp(stabilized, policy, allow_zero=stabilized == 0), reason)
    return Decision(_clamp(current, policy), "Steady")


def _clamp(n: int, policy: Policy, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else max(policy.min_replicas, 1)
    return max(low, min(policy.max_replicas, n))


def metric_value(info: inference_pb2.ModelInfo, metric: str) -> float:
    """One replica's value of the route's scaling metric."""
    load = info.load
    if metric == "kvCacheUsage":
        return float(load.kv_cache_usage)
    if metric == "tokensPerSecond":
        return float(load.generated_tokens_per_second)
    return float(load.waiting_requests + load.running_requests)


async def read_load(
    targets: Iterable[str], metric: str, timeout_s: float
) -> tuple[float | None, int]:
    """Sums the metric over the replicas at `targets` (host:port) via GetModelInfo.

    Each call has a deadline; a replica that does not answer is left out (it is not
    ready, and readiness is the Deployment's business). Returns (sum or None, answered).
    """

    async def one(target: str) -> float | None:
        channel = insecure_channel(target)
        try:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=timeout_s)
            return metric_value(info, metric)
        except Exception:  # any RPC failure means "no report from this replica"
            return None
        finally:
            await channel.close()

    values = [v for v in await asyncio.gather(*(one(t) for t in targets)) if v is not None]
    return (sum(values) if values else None), len(values)


def demand_pending(annotations: dict[str, str], key: str, since: float, now: float) -> bool:
    """True when the router's demand annotation (an RFC 3339 time) is newer than `since`
    and not older than 10 minutes (a stale signal must not wake a route forever)."""
    raw = annotations.get(key)
    if not raw:
        return False
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return True  # any non-time value is a plain "wake up"
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    ts = at.timestamp()
    return ts > since - 1 and now - ts < 600


def _grpc_port(pod: dict[str, Any], default: int) -> int:
    """The container port named `grpc` (what the Deployment declares), else the default."""
    spec = pod.get("spec") or {}
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "grpc" and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return default


def pod_targets(pods: Sequence[dict[str, Any]], port: int) -> list[str]:
    """host:port of each running, ready pod with an IP (the replicas that can report)."""
    result: list[str] = []
    for pod in pods:
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if status.get("phase") != "Running" or not isinstance(ip, str) or not ip:
            continue
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue  # draining: its load is leaving with it
        host = f"[{ip}]" if ":" in ip else ip
        result.append(f"{host}:{_grpc_port(pod, port)}")
    return result


# The autoscaler's memory kept in the route's status (`status.autoscaler`), so a restarted
# or new leader neither forgets a stabilisation window (and scales down early) nor starts
# it afresh (and scales down a whole window late). Only what can still change a decision
# is kept: per replica count above the floor, the last time it was recommended (dropping a
# count that a higher one outlasts), and the last busy time. It is written when it has
# moved on by more than `resolution_s` (not every tick), and read back `resolution_s`
# later than written, so the restored memory is never older than the lost one.
STATE_FIELD = "autoscaler"


def _floor(policy: Policy) -> int:
    """Recommendations at or below this never hold replicas up (the bounds do already)."""
    return 0 if policy.scale_to_zero else max(1, policy.min_replicas)


def holds(state: ScaleState, policy: Policy) -> list[tuple[float, int]]:
    """(last time, replicas) per count that still matters, highest count first.

    A count recommended no later than a higher one is dropped: the higher one holds the
    window at least as long.
    """
    latest: dict[int, float] = {}
    for at, count in state.recommendations:
        if count > _floor(policy):
            latest[count] = max(at, latest.get(count, at))
    kept: list[tuple[float, int]] = []
    for count in sorted(latest, reverse=True):
        if not kept or latest[count] > kept[-1][0]:
            kept.append((latest[count], count))
    return kept


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(math.ceil(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(raw: Any) -> float | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _stored(status: dict[str, Any] | None) -> tuple[list[tuple[float, int]], float | None] | None:
    raw = (status or {}).get(STATE_FIELD)
    if not isinstance(raw, dict):
        return None
    recs: list[tuple[float, int]] = []
    for item in raw.get("recommendations") or []:
        at = _time((item or {}).get("time"))
        if at is not None and isinstance(item.get("replicas"), int):
            recs.append((at, int(item["replicas"])))
    return recs, _time(raw.get("lastBusyTime"))


def state_to_status(state: ScaleState, policy: Policy) -> dict[str, Any]:
    """`status.autoscaler` for this memory (times rounded up to the second)."""
    out: dict[str, Any] = {
        "recommendations": [{"replicas": n, "time": _stamp(t)} for t, n in holds(state, policy)]
    }
    if state.last_busy_at is not None:
        out["lastBusyTime"] = _stamp(state.last_busy_at)
    return out


def state_from_status(
    status: dict[str, Any] | None, resolution_s: float, now: float
) -> ScaleState | None:
    """The memory a previous leader left, pushed `resolution_s` later; None when none."""
    stored = _stored(status)
    if stored is None:
        return None
    recs, busy = stored
    return ScaleState(
        recommendations=[(t + resolution_s, n) for t, n in recs],
        last_busy_at=now if busy is None else min(now, busy + resolution_s),
    )


def needs_write(
    state: ScaleState, status: dict[str, Any] | None, policy: Policy, resolution_s: float
) -> bool:
    """True when the stored memory would make a new leader scale down earlier than this one
    by more than `resolution_s`."""
    stored = _stored(status)
    recs, busy = stored if stored is not None else ([], None)
    for at, count in holds(state, policy):
        if not any(n >= count and t >= at - resolution_s for t, n in recs):
            return True
    if policy.scale_to_zero and state.last_busy_at is not None:
        return busy is None or state.last_busy_at - busy > resolution_s
    return False
