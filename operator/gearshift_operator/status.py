"""Pure functions: the route's status (replicas, conditions) from its Deployment's state.

Conditions follow what the Deployment controller reports, never what the operator hopes:
- Progressing: a rollout or scale-up is under way (the Deployment has not reached
  NewReplicaSetAvailable for its current generation, or replicas are still starting).
- Ready: at least one replica passes the gRPC health check, so the router may use it.
- Degraded: the rollout failed (ProgressDeadlineExceeded, ReplicaFailure) or, with the
  rollout complete, fewer replicas are ready than desired (pods crashed or were lost).
The pods' own states (pod_health.py) then correct them: PodsHealthy names the worst pod
problem, which also becomes Degraded's reason while replicas are missing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gearshift_operator import pod_health

Conditions = list[dict[str, Any]]


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def merge_conditions(old: list[dict[str, Any]], new: Conditions, now: str) -> Conditions:
    """New conditions, keeping lastTransitionTime when a condition's status is unchanged."""
    by_type = {c.get("type"): c for c in old or []}
    result: Conditions = []
    for cond in new:
        prev = by_type.get(cond["type"])
        same = prev is not None and prev.get("status") == cond["status"]
        stamp = prev.get("lastTransitionTime") if same and prev is not None else now
        result.append({**cond, "lastTransitionTime": stamp or now})
    return result


def _c(type_: str, ok: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def conditions_for_external(generation: int | None) -> Conditions:
    msg = "backend deployed elsewhere (spec.routing.endpoint); nothing to deploy"
    return [
        _c("Ready", True, "ExternalEndpoint", msg, generation),
        _c("Progressing", False, "ExternalEndpoint", msg, generation),
        _c("Degraded", False, "ExternalEndpoint", msg, generation),
    ]


def fallback_condition(
    name: str, namespace: str, found: bool, generation: int | None
) -> dict[str, Any]:
    """FallbackResolved: True when spec.routing.fallback names an existing route."""
    if found:
        return _c("FallbackResolved", True, "FallbackFound", f"route {name} exists", generation)
    msg = (
        f"routing.fallback names route {name}, which does not exist in namespace "
        f"{namespace}: failed requests will not escalate until it is created"
    )
    return _c("FallbackResolved", False, "FallbackNotFound", msg, generation)


def conditions_for_error(reason: str, message: str, generation: int | None) -> Conditions:
    return [
        _c("Ready", False, reason, message, generation),
        _c("Progressing", False, reason, message, generation),
        _c("Degraded", True, reason, message, generation),
    ]


def deployment_status(
    deployment: dict[str, Any] | None, generation: int | None
) -> tuple[dict[str, Any], Conditions]:
    """(replica counts, conditions) of the route from its Deployment (None: not created)."""
    if deployment is None:
        msg = "model-server Deployment not created yet"
        return {"replicas": 0, "readyReplicas": 0}, [
            _c("Ready", False, "Deploying", msg, generation),
            _c("Progressing", True, "Deploying", msg, generation),
            _c("Degraded", False, "Deploying", msg, generation),
        ]
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    replicas = int(st.get("replicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    dep_gen = (deployment.get("metadata") or {}).get("generation")
    seen_gen = st.get("observedGeneration")
    counts = {"replicas": replicas, "readyReplicas": ready, "desiredReplicas": desired}
    progressing = _cond(deployment, "Progressing")
    failure = _cond(deployment, "ReplicaFailure")
    summary = f"{ready}/{desired} replicas ready"

    if desired == 0:
        msg = "scaled to zero; the router's demand signal wakes it"
        return counts, [
            _c("Ready", False, "ScaledToZero", msg, generation),
            _c(
                "Progressing",
                replicas > 0,
                "ScalingDown" if replicas else "ScaledToZero",
                msg,
                generation,
            ),
            _c("Degraded", False, "ScaledToZero", msg, generation),
        ]

    failed_reason = ""
    failed_message = ""
    if progressing.get("status") == "False":
        failed_reason = progressing.get("reason") or "ProgressDeadlineExceeded"
        failed_message = progressing.get("message") or "rollout stalled"
    elif failure.get("status") == "True":
        failed_reason = "ReplicaFailure"
        failed_message = failure.get("message") or "pods cannot be created"
    generation_seen = dep_gen is None or (seen_gen is not None and seen_gen >= dep_gen)
    rollout_done = (
        generation_seen
        and updated >= desired
        and progressing.get("reason") == "NewReplicaSetAvailable"
    )

    if failed_reason:
        degraded = _c("Degraded", True, failed_reason, f"{summary}: {failed_message}", generation)
        prog = _c("Progressing", False, failed_reason, failed_message, generation)
    elif rollout_done and ready < desired:
        degraded = _c("Degraded", True, "ReplicasUnavailable", summary, generation)
        prog = _c("Progressing", False, "RolloutComplete", summary, generation)
    elif not rollout_done or ready < desired:
        degraded = _c("Degraded", False, "AsExpected", summary, generation)
        prog = _c("Progressing", True, "RolloutInProgress", summary, generation)
    else:
        degraded = _c("Degraded", False, "AsExpected", summary, generation)
        prog = _c("Progressing", False, "RolloutComplete", summary, generation)

    if ready >= desired:
        ready_c = _c("Ready", True, "AllReplicasReady", summary, generation)
    elif ready > 0:
        ready_c = _c("Ready", True, "SomeReplicasReady", summary, generation)
    else:
        ready_c = _c("Ready", False, "NoReplicasReady", summary, generation)
    return counts, [ready_c, prog, degraded]


def pods_healthy_condition(health: pod_health.Health, generation: int | None) -> dict[str, Any]:
    """PodsHealthy: False with the worst pod problem (its kind as the reason), else True."""
    reason, message = pod_health.summary(health)
    if reason:
        return _c("PodsHealthy", False, reason, message, generation)
    if health.loading:
        msg = (
            f"{health.loading} pod(s) starting (scheduling, pulling the image, fetching or "
            f"loading the model), {health.ready} ready"
        )
        return _c("PodsHealthy", True, "PodsStarting", msg, generation)
    if not health.pods:
        return _c("PodsHealthy", True, "NoPods", "no model-server pods", generation)
    return _c("PodsHealthy", True, "AllPodsHealthy", f"{health.ready} pod(s) ready", generation)


def with_pod_health(
    conds: Conditions, health: pod_health.Health, generation: int | None
) -> Conditions:
    """The Deployment's conditions corrected by what the pods say, plus PodsHealthy.

    A pod problem while fewer replicas are ready than wanted makes the route Degraded
    with the problem's kind as the reason (CrashLoopBackOff, OOMKilled, ImagePullBackOff,
    Unschedulable, ReadinessProbeFailing, ...), and names it in Ready when nothing serves,
    instead of the Deployment's "rollout in progress" until its progress deadline.
    """
    reason, message = pod_health.summary(health)
    serving = any(c["type"] == "Ready" and c["reason"] == "AllReplicasReady" for c in conds)
    if serving:
        reason = ""  # e.g. a surge pod of a rollout: PodsHealthy names it, nothing degrades
    out: Conditions = []
    for cond in conds:
        kind = cond["type"]
        if reason and kind == "Degraded" and cond["reason"] not in ("ScaledToZero",):
            cond = _c("Degraded", True, reason, message, generation)
        elif reason and kind == "Ready" and cond["status"] == "False":
            cond = _c("Ready", False, reason, message, generation)
        out.append(cond)
    return [*out, pods_healthy_condition(health, generation)]


def held_conditions(reason: str, message: str, failing: bool, generation: int | None) -> Conditions:
    """Ready/Progressing/Degraded while the operator holds the Deployment at 0 replicas:
    staging weights (progressing, not degraded) or blocked after failed loads (degraded)."""
    return [
        _c("Ready", False, reason, message, generation),
        _c("Progressing", not failing, reason, message, generation),
        _c("Degraded", failing, reason, message, generation),
    ]


def weights_staged_condition(
    ok: bool, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    """WeightsStaged: the staging Job filled the cache claim (hf:// routes with cacheClaim)."""
    return _c("WeightsStaged", ok, reason, message, generation)
